"""Run configuration: one TOML file, validated by pydantic; unknown keys are errors."""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from teachloop.errors import ConfigError
from teachloop.messages import Role

EMBEDDED_MODEL = "embedded:gemma-3-270m"
DEFAULT_TOPICS = (
    "arithmetic.addition",
    "arithmetic.subtraction",
    "arithmetic.multiplication",
    "units.length",
    "units.mass",
)


def _domain_spec(value: object) -> object:
    from teachloop.domains.base import Domain

    if isinstance(value, Domain):
        return value
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
        return value
    raise ValueError(
        f"{value!r} is neither an import path 'package.module:ClassName' nor a Domain instance"
    )


def domain_name(value: object) -> str:
    """An own domain as the config stores it: its import path."""
    return value if isinstance(value, str) else f"{type(value).__module__}:{type(value).__name__}"


# A domain of the user's: "package.module:ClassName" (from TOML; built with no arguments when the
# run starts) or, from Python, a Domain instance. Stored configs record its import path.
DomainSpec = Annotated[
    Any, PlainValidator(_domain_spec), PlainSerializer(domain_name, when_used="json")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointConfig(_Strict):
    """One OpenAI-compatible server (vLLM's, or any other).

    The API key: ``api_key_env`` names the environment variable that holds it (unset: an error
    naming the variable when the backend starts); ``api_key`` gives it in clear; with neither,
    ``OPENAI_API_KEY`` if set, else ``"EMPTY"`` (as the OpenAI client does). The key is never
    in a dump of the config (``api_key`` is a ``SecretStr``: ``**********`` in JSON, so not in
    the ``runs`` table) and a key from the environment is never in the config at all.
    """

    url: str = Field(pattern=r"^https?://", description="base URL, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="the model name the server serves")
    api_key: SecretStr | None = Field(default=None, description="the key in clear")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable holding the key",
    )
    max_concurrency: int = Field(default=16, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self

    def resolved_api_key(self) -> str:
        """The key to send; ``ConfigError`` naming the variable if ``api_key_env``'s is unset."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(
                    f"endpoint {self.url}: api_key_env names the environment variable "
                    f"{self.api_key_env}, which is not set (export it, holding the API key)"
                )
            return key
        return os.environ.get("OPENAI_API_KEY") or "EMPTY"


class AgentConfig(_Strict):
    """Which model plays a role and how it generates: in-process (``transformers``), on the
    vLLM servers of ``[[servers]]`` (``vllm``), or on any OpenAI-compatible ``endpoints``.

    ``model`` is the weights: what teachloop loads, serves and (for the student) trains. With
    ``openai`` endpoints the server's model name is the endpoint's ``model``, a separate setting,
    so the student's ``model`` must then be given: the weights that endpoint serves.
    """

    # Instances passed to RunConfig are validated again, so the role checks below see them too.
    model_config = ConfigDict(revalidate_instances="always")

    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    model: str = Field(default=EMBEDDED_MODEL, description="embedded name or a model directory")
    # auto: bfloat16 where the CPU computes in it natively, else float32 (emulated is ~2x slower)
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    max_batch_size: int = Field(default=16, ge=1)
    api: Literal["completions", "chat"] = "completions"
    endpoints: tuple[EndpointConfig, ...] = ()
    temperature: float = Field(default=0.0, ge=0.0)
    max_tokens: int = Field(default=48, ge=1)
    # Student only: use the adapter of the store's promoted model version, if there is one.
    follow_promoted: bool = True
    # Student only: write the work, then a line "Answer: <answer>" (needs ~200+ max_tokens for
    # word problems). The reference a correct reply is trained toward is then the domain's
    # worked solution, not the bare answer (each pair records its target).
    shown_work: bool = False

    @model_validator(mode="after")
    def _endpoints_match_backend(self) -> Self:
        if self.backend == "openai" and not self.endpoints:
            raise ValueError("backend 'openai' needs at least one [[...endpoints]] entry")
        if self.backend != "openai" and self.endpoints:
            raise ValueError("endpoints are only used with backend = 'openai'")
        return self


class ServerConfig(_Strict):
    """vLLM servers that `teachloop serve` starts on 127.0.0.1 for one or both roles.

    They serve the role's ``model`` (both roles' models must then be the same); replica ``i``
    listens on ``port + i``. The student's servers load LoRA adapters at runtime, so a promoted
    student version goes live without a restart.
    """

    roles: tuple[Role, ...] = Field(min_length=1)
    port: int = Field(ge=1024, le=65535 - 64)
    replicas: int = Field(default=1, ge=1, le=64)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    max_model_len: int = Field(default=2048, ge=128)
    # Client side: requests in flight per replica (the server batches what it gets).
    max_concurrency: int = Field(default=32, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    startup_timeout_s: float = Field(default=600.0, gt=0)
    # CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE). CUDA graphs/compilation cost ~1 min
    # of startup on CPU for little gain at this size, hence eager by default.
    kv_cache_gib: float = Field(default=2.0, gt=0)
    enforce_eager: bool = True
    # Reuse the KV cache of prompt prefixes the server has seen (every student prompt starts
    # with the same few-shot preamble, every teacher prompt with its strategy's example).
    prefix_caching: bool = True
    # vLLM's KV cache block size; caching works on whole blocks, and vLLM's CPU default (128
    # tokens) is longer than teachloop's shared prompt prefixes. None: vLLM's default.
    block_size: int | None = Field(default=None, ge=1)
    # GPU: GPUs per replica, and the share of each GPU's memory vLLM may take.
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_lora_rank: int = Field(default=16, ge=1)
    max_loras: int = Field(default=4, ge=1)
    args: tuple[str, ...] = Field(default=(), description="more vLLM flags, passed verbatim")

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port + i}/v1" for i in range(self.replicas)]

    @property
    def lora(self) -> bool:
        return "student" in self.roles


class LessonConfig(_Strict):
    """One lesson's budget, and the teacher's policies (the defaults target; the others exist
    to ablate targeting in experiments)."""

    questions: int = Field(default=4, ge=1, description="question budget per lesson")
    max_reteaches: int = Field(default=1, ge=0, description="reteach rounds per wrong answer")
    mastery_target: float = Field(default=0.9, gt=0.0, le=1.0)
    start_difficulty: int = Field(default=1, ge=1, le=5)
    topic_policy: Literal["thompson", "uniform", "weakest", "round_robin"] = "thompson"
    strategy_policy: str = Field(
        default="thompson",
        pattern=r"^(thompson|uniform|fixed:(hint|worked_example|step_by_step))$",
        description="thompson, uniform, or fixed:<hint|worked_example|step_by_step>",
    )
    # staircase: one level up after a first-try success, one down after a miss; fixed: always
    # start_difficulty.
    difficulty_policy: Literal["staircase", "fixed"] = "staircase"
    # A run starts from what earlier lessons showed about the student: those of the same
    # student version count fully, those of earlier versions this much each (a newly promoted
    # student is a different learner, but not a stranger); 0 starts each version afresh.
    carry_decay: float = Field(default=0.5, ge=0.0, le=1.0)
    # False: a run starts from the prior and counts only its own lessons (a resume still starts
    # from them); experiments use it so that seeds are independent.
    carry_over: bool = True
    # Mask the reference answer (and the numbers equal to it) out of a reteach before the
    # student sees it: a reteach teaches the method, the student finds the answer. The LLM's
    # own text stays in the log (Reteach.written).
    mask_answers: bool = True


class EvalConfig(_Strict):
    """The held-out set (never asked in lessons) and the promotion gate."""

    per_topic: int = Field(default=20, ge=1)
    seed: int = 1234
    tolerance: float = Field(default=0.05, ge=0.0, le=1.0, description="allowed accuracy drop")


class TrainingConfig(_Strict):
    """LoRA fine-tuning of the student on preference pairs from the log: the one set of training
    hyperparameters (the trainer takes this model; ``[training]`` in a config file fills it).

    With a parent adapter the LoRA shape (r, alpha, dropout, target modules) is the parent's;
    the ``lora_*`` and ``target_modules`` fields apply only to a fresh adapter.
    """

    method: Literal["dpo", "sft", "kd"] = "dpo"  # kd: token-level distillation (training/kd.py)
    steps: int = Field(default=16, ge=1, description="optimizer steps; short data is cycled")
    batch_size: int = Field(default=4, ge=1)
    # LoRA needs ~10x the full fine-tuning rate; 5e-5 moves a 270M model in 16 DPO steps
    # without collapsing it (TRL's own DPO default, 1e-6, is for full fine-tuning).
    learning_rate: float = Field(default=5e-5, gt=0)
    beta: float = Field(default=0.1, gt=0, description="DPO temperature")
    # KD: softmax temperature of both distributions; the KL term is scaled by T^2.
    kd_temperature: float = Field(default=2.0, gt=0)
    # KD: loss = alpha * T^2 * KL + (1 - alpha) * cross-entropy on the reference answer.
    kd_alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    # KD: "forward" is KL(teacher || student) (mode covering), "reverse" KL(student || teacher).
    kd_direction: Literal["forward", "reverse"] = "forward"
    # KD: a separate teacher model directory (same tokenizer, e.g. a bigger model on a GPU);
    # unset: the student's own base weights (adapter off), shown the solution in its prompt.
    kd_teacher: Path | None = None
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    max_length: int = Field(default=512, ge=8, description="prompt + completion tokens; cut")
    seed: int = 0
    adapters: Path | None = Field(
        default=None, description="where adapters are written (default: <db dir>/adapters)"
    )
    # Which preference pairs a job trains on. `self_corrected_leaked` (a right answer after a
    # reteach that stated the answer: maybe copied, not learned) is left out by default.
    pair_rules: tuple[Literal["self_corrected", "reference", "self_corrected_leaked"], ...] = (
        "self_corrected",
        "reference",
    )
    # Which pair targets a job trains on: "answer" (the bare answer) and/or "solution" (worked
    # solutions, from a student with [student] shown_work). Recorded with the job's config.
    targets: tuple[Literal["answer", "solution"], ...] = ("answer", "solution")
    # More TRL training arguments, passed through as TRL's own scripts do (e.g.
    # report_to = ["tensorboard"], gradient_accumulation_steps = 4, warmup_ratio = 0.1).
    trl: dict[str, Any] = Field(default_factory=dict)

    @field_validator("trl")
    @classmethod
    def _trl_not_ours(cls, args: dict[str, Any]) -> dict[str, Any]:
        for key in args:
            if key in _TRL_OWNED:
                raise ValueError(f"trl.{key} is set by teachloop: {_TRL_OWNED[key]}")
        return args


# TRL arguments that teachloop sets itself, and where a user changes them instead.
_TRL_OWNED = {
    "max_steps": "use training.steps",
    "per_device_train_batch_size": "use training.batch_size",
    "learning_rate": "use training.learning_rate",
    "beta": "use training.beta",
    "seed": "use training.seed",
    "max_length": "use training.max_length",
    "output_dir": "adapters go to training.adapters",
    "save_strategy": "the adapter is saved once, at the end",
    "completion_only_loss": "SFT trains on the answer only",
}


ArmData = Literal["none", "uniform", "selective", "pool"]
ArmMethod = Literal["sft", "dpo", "sft_then_dpo", "kd"]
# How a pool arm picks its examples from the seed's pool of questions the student answered:
# at random (the uniform arm of a pool design), its wrong answers, its right answers (a
# negative control), or the highest loss of the reference answer under the student.
PoolSelect = Literal["random", "failed", "correct", "loss"]


class ArmConfig(_Strict):
    """One arm of an experiment: which data trains the student, and how.

    ``uniform``: questions drawn evenly over topics and difficulties, answered with the
    domain's reference answer (standard distillation; no lessons); ``topics = "weak"`` draws
    them over the topics the starting student is weak at on the validation split only (the
    oracle). ``selective``: preference pairs from lessons with the targeting teacher
    (``lesson`` overrides its policies, e.g. ``{topic_policy = "uniform"}`` to ablate
    targeting). ``pool``: examples picked one by one from a shared pool of generated questions
    the student has answered (``select``), trained on the reference answers. ``kd``: token-level
    distillation on the uniform questions, the teacher being the base weights with the solution
    in context.

    ``target``: what a reference-trained arm (uniform, pool, kd, or none: the untrained
    student) is trained toward and asked for: ``"answer"``, the bare reference answer, or
    ``"solution"``, the domain's worked solution, the student showing its work in training and
    evaluation alike (replies capped at the experiment's ``solution_max_tokens``). Unset: as
    ``[student] shown_work`` says. Two arms that differ only in target train on the same
    questions, so their difference is the explanations' alone.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: ArmData
    method: ArmMethod | None = None
    select: PoolSelect | None = None
    topics: Literal["all", "weak"] = "all"
    # A pool arm in rounds: the budget and steps split over R rounds, the student re-measured
    # on the pool before each (the closed loop).
    rounds: int = Field(default=1, ge=1)
    lesson: dict[str, Any] = Field(default_factory=dict, description="[lesson] overrides")
    training: dict[str, Any] = Field(default_factory=dict, description="[training] overrides")
    target: Literal["answer", "solution"] | None = None

    @model_validator(mode="after")
    def _method_fits_data(self) -> Self:
        if (self.data == "none") != (self.method is None):
            raise ValueError(
                f"arm {self.name}: data 'none' (no training) and only it has no method"
            )
        if self.method in ("dpo", "sft_then_dpo") and self.data != "selective":
            raise ValueError(f"arm {self.name}: {self.method} needs preference pairs (selective)")
        if self.lesson and self.data != "selective":
            raise ValueError(f"arm {self.name}: lesson overrides apply to selective data only")
        if (self.data == "pool") != (self.select is not None):
            raise ValueError(f"arm {self.name}: select goes with data 'pool', and only with it")
        if self.rounds > 1 and (self.data != "pool" or self.method != "sft"):
            raise ValueError(
                f"arm {self.name}: rounds re-measure the student on a pool: data 'pool', "
                "method 'sft' (lessons in rounds are `teachloop loop`'s)"
            )
        if self.target is not None and (self.data == "selective" or self.rounds > 1):
            raise ValueError(
                f"arm {self.name}: target applies to arms trained on reference examples in one "
                "go (selective arms train on what the lessons' student wrote: [student] "
                "shown_work; rounds re-measure the student as [student] says)"
            )
        if self.topics == "weak" and self.data != "uniform":
            raise ValueError(f"arm {self.name}: topics 'weak' applies to uniform data only")
        for section, model in (("lesson", LessonConfig), ("training", TrainingConfig)):
            try:
                model.model_validate(getattr(self, section))
            except ValidationError as e:
                raise ValueError(f"arm {self.name}: {section}.{_first_error(e)}") from None
        return self


BUILTIN_ARMS = {
    arm.name: arm
    for arm in (
        ArmConfig(name="base", data="none"),
        ArmConfig(name="uniform_sft", data="uniform", method="sft"),
        ArmConfig(name="selective_sft", data="selective", method="sft"),
        ArmConfig(name="selective_dpo", data="selective", method="dpo"),
        ArmConfig(name="selective_sft_then_dpo", data="selective", method="sft_then_dpo"),
        ArmConfig(name="kd", data="uniform", method="kd"),
        ArmConfig(
            name="selective_sft_uniform_topics",
            data="selective",
            method="sft",
            lesson={"topic_policy": "uniform"},
        ),
        # The second design (issue 29): selection per example from one shared pool, and the
        # oracle that knows the weak topics from the validation split.
        ArmConfig(name="random", data="pool", method="sft", select="random"),
        ArmConfig(name="failed_only", data="pool", method="sft", select="failed"),
        ArmConfig(name="student_loss", data="pool", method="sft", select="loss"),
        ArmConfig(name="correct_only", data="pool", method="sft", select="correct"),
        ArmConfig(name="oracle", data="uniform", method="sft", topics="weak"),
        # Targets (issue 29): the same arms trained toward worked solutions, the student showing
        # its work; base_solution is the untrained student asked the same way.
        ArmConfig(name="base_solution", data="none", target="solution"),
        ArmConfig(
            name="random_solution", data="pool", method="sft", select="random", target="solution"
        ),
        ArmConfig(
            name="failed_only_solution",
            data="pool",
            method="sft",
            select="failed",
            target="solution",
        ),
    )
}


class PretrainConfig(_Strict):
    """``[experiment.pretrain]``: make the starting student uneven, as deployed models are, by
    SFT on reference examples of some topics, merged into a model every arm starts from."""

    topics: tuple[str, ...] = Field(min_length=1)
    examples: int = Field(default=96, ge=1, description="reference examples per topic")
    training: dict[str, Any] = Field(default_factory=dict, description="[training] overrides")

    @field_validator("training")
    @classmethod
    def _training_valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            TrainingConfig.model_validate(value)
        except ValidationError as e:
            raise ValueError(f"training.{_first_error(e)}") from None
        return value


class ExperimentConfig(_Strict):
    """Arms trained from the same base student on equal budgets, evaluated on one held-out
    set, over several seeds (``teachloop experiment``)."""

    name: str = Field(default="experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), min_length=1)
    arms: tuple[str | ArmConfig, ...] = Field(
        default=("base", "uniform_sft", "selective_sft", "selective_dpo", "kd"), min_length=1
    )
    # The budget every trained arm gets: this many distinct training examples (fewer if a
    # seed's lessons give fewer pairs: then every arm of that seed gets that many), and
    # [training].steps optimizer steps.
    examples: int = Field(default=64, ge=1)
    lessons: int = Field(default=32, ge=1, description="lessons per seed for selective data")
    # The one pre-registered comparison (arm, reference), stated in the report before any
    # number; every other comparison is secondary (Holm-adjusted). None: all are exploratory.
    primary: tuple[str, str] | None = None
    # Budget curves: every trained arm also trains on the first n of its examples for each n
    # here (smaller than `examples`), steps scaled to keep the epochs; results `<arm>@<n>`.
    budgets: tuple[int, ...] = ()
    # The arms the budget curve covers (each a trained arm here); empty: every trained arm.
    curve: tuple[str, ...] = ()
    pool: int = Field(default=256, ge=1, description="questions per seed for pool arms")
    # The student's max_tokens for arms with target "solution" (worked replies are longer: the
    # built-in arithmetic's reach 189 tokens at difficulty 5).
    solution_max_tokens: int = Field(default=192, ge=1)
    pretrain: PretrainConfig | None = None
    # Every draw of the experiment (pre-teaching and its check, the splits, the pool, uniform
    # data) at difficulties 1..max_difficulty only: where the arms train is where they are
    # scored. None: each topic's full range.
    max_difficulty: int | None = Field(default=None, ge=1)
    # Which split the arms are scored on: "test" (reported), or "validation" (tuning runs:
    # disjoint from every seed's test split by construction).
    evaluate_on: Literal["test", "validation"] = "test"

    @field_validator("arms", mode="before")
    @classmethod
    def _tables_are_arms(cls, arms: object) -> object:
        """An arm table's own error (not pydantic's tour of the str | ArmConfig union)."""
        if not isinstance(arms, list | tuple):
            return arms
        parsed = []
        for i, arm in enumerate(arms):
            if isinstance(arm, dict):
                try:
                    arm = ArmConfig.model_validate(arm)
                except ValidationError as e:
                    raise ValueError(
                        f"arm {i}: {_first_error(e).removeprefix('config: ')}"
                    ) from None
            parsed.append(arm)
        return parsed

    @model_validator(mode="after")
    def _arms_known(self) -> Self:
        for arm in self.arms:
            if isinstance(arm, str) and arm not in BUILTIN_ARMS:
                raise ValueError(
                    f"unknown arm {arm!r} (built in: {', '.join(BUILTIN_ARMS)}; "
                    "or give a table with name, data and method)"
                )
        names = [a.name for a in self.arm_configs()]
        if len(set(names)) != len(names):
            raise ValueError("two arms have the same name")
        if self.max_difficulty is not None and any(
            a.data == "selective" for a in self.arm_configs()
        ):
            raise ValueError(
                "max_difficulty caps the experiment's own draws; selective arms' lessons climb "
                "the teacher's staircase uncapped: leave one of them out"
            )
        trained = {a.name for a in self.arm_configs() if a.method}
        for name in self.curve:
            if name not in trained:
                raise ValueError(f"curve names {name!r}, which is not a trained arm here")
        budgets = [f"{a.name}@{b}" for a in self.curve_arms() for b in self.budgets]
        for name in self.primary or ():
            if name not in names and name not in budgets:
                raise ValueError(f"primary names {name!r}, which is not an arm here")
        if self.primary and self.primary[0] == self.primary[1]:
            raise ValueError("primary compares an arm with itself: name two arms")
        if any(b >= self.examples for b in self.budgets):
            raise ValueError("budgets are the smaller budgets of a curve: each below examples")
        return self

    def arm_configs(self) -> list[ArmConfig]:
        return [BUILTIN_ARMS[a] if isinstance(a, str) else a for a in self.arms]

    def curve_arms(self) -> list[ArmConfig]:
        """The trained arms the budget curve covers."""
        return [
            a for a in self.arm_configs() if a.method and (not self.curve or a.name in self.curve)
        ]


LAKE_PREFIX = "ducklake:"


def db_target(value: object) -> object:
    """A store target (config ``db``, the CLI's ``--db``): a lake
    (``ducklake:postgres:<conninfo>``) stays a string, anything else is a DuckDB file's path."""
    if isinstance(value, str) and not value.startswith(LAKE_PREFIX):
        return Path(value)
    return value


# Where the log lives: a DuckDB file, or a lake target (a string starting with "ducklake:").
DBTarget = Annotated[Path | str, BeforeValidator(db_target)]


class StoreConfig(_Strict):
    """``[store]``: settings of a lake (``db = "ducklake:postgres:..."``)."""

    data_path: Path | None = Field(
        default=None,
        description="the lake's Parquet files: a directory every machine mounts at this path "
        "(needed when the lake is created; its catalog remembers it); adapters, servers' logs "
        "and experiments go beside it",
    )
    reconnect_timeout_s: float = Field(
        default=60.0,
        ge=0,
        description="how long a lake's writes and reads and the checkpoints wait for the "
        "catalog's PostgreSQL to come back (a restart, a failover) before the command stops",
    )


class RunConfig(_Strict):
    db: DBTarget = Path("teachloop.duckdb")
    store: StoreConfig = StoreConfig()
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    lessons: int = Field(default=8, ge=1)
    concurrency: int = Field(default=8, ge=1)
    seed: int = 0
    topics: tuple[str, ...] = DEFAULT_TOPICS
    banks: tuple[Path, ...] = Field(default=(), description="JSONL question banks")
    domains: tuple[DomainSpec, ...] = Field(
        default=(), description="own domains beside the built-in ones (teachloop.domains.Domain)"
    )
    lesson: LessonConfig = LessonConfig()
    eval: EvalConfig = EvalConfig()
    training: TrainingConfig = TrainingConfig()
    teacher: AgentConfig = AgentConfig(max_tokens=48)
    student: AgentConfig = AgentConfig(max_tokens=12)
    servers: tuple[ServerConfig, ...] = ()
    experiment: ExperimentConfig = ExperimentConfig()
    # Prompt templates over the defaults (teachloop.agents.prompts.DEFAULTS names them): Jinja2
    # text, or in TOML `{ file = "student.j2" }` (relative to the config file).
    prompts: dict[str, str] = Field(default_factory=dict)
    # Options of reasoning-gym tasks, by task: `[reasoning_gym.gsm_symbolic]` passes its keys to
    # the task's config over the curriculum level's (topics "reasoning_gym.<task>").
    reasoning_gym: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _teacher_shows_no_work(self) -> Self:
        if self.teacher.shown_work:
            raise ValueError("teacher.shown_work: only the student shows its work")
        return self

    @model_validator(mode="after")
    def _servers_match_roles(self) -> Self:
        ports: dict[int, int] = {}
        for i, server in enumerate(self.servers):
            for role in server.roles:
                agent = self.agent(role)
                if agent.backend != "vllm":
                    raise ValueError(
                        f"servers.{i} serves the {role} but [{role}].backend is "
                        f"'{agent.backend}': set it to 'vllm'"
                    )
            if len({self.agent(r).model for r in server.roles}) > 1:
                raise ValueError(
                    f"servers.{i} serves teacher and student, which use different models: "
                    "give each role its own server"
                )
            if server.lora and server.max_lora_rank < self.training.lora_r:
                raise ValueError(
                    f"servers.{i}.max_lora_rank ({server.max_lora_rank}) is below "
                    f"training.lora_r ({self.training.lora_r}): the server could not load "
                    "the student's adapters"
                )
            for port in range(server.port, server.port + server.replicas):
                if port in ports:
                    raise ValueError(
                        f"servers.{i}: port {port} is also used by servers.{ports[port]}"
                    )
                ports[port] = i
        for role in ("teacher", "student"):
            if self.agent(role).backend == "vllm" and not self.servers_for(role):
                raise ValueError(
                    f"[{role}].backend is 'vllm' but no [[servers]] entry has '{role}' in its roles"
                )
        return self

    @model_validator(mode="after")
    def _student_weights_explicit(self) -> Self:
        if self.student.backend == "openai" and "model" not in self.student.model_fields_set:
            raise ValueError(
                "student: with backend 'openai', set model to the weights the endpoint serves (a "
                "model directory): teachloop trains and evaluates those, not the endpoint's name"
            )
        return self

    @property
    def home(self) -> Path:
        """Where servers started for this config log: the DuckDB file's directory, or for a
        lake the directory holding its data path, else the working directory. Files that
        belong with the log (adapters, experiments) go to ``Store.home``, which also knows a
        lake's data path from its catalog."""
        if isinstance(self.db, Path):
            return self.db.parent
        return self.store.data_path.parent if self.store.data_path else Path.cwd()

    def agent(self, role: Role) -> AgentConfig:
        return self.teacher if role == "teacher" else self.student

    def servers_for(self, role: Role) -> tuple[ServerConfig, ...]:
        return tuple(s for s in self.servers if role in s.roles)

    def endpoints_for(self, role: Role) -> tuple[EndpointConfig, ...]:
        """The endpoints a role's requests go to: its own, or its vLLM servers' replicas."""
        agent = self.agent(role)
        if agent.backend != "vllm":
            return agent.endpoints
        return tuple(
            EndpointConfig(
                url=url,
                model=agent.model,
                max_concurrency=s.max_concurrency,
                timeout_s=s.timeout_s,
            )
            for s in self.servers_for(role)
            for url in s.urls()
        )

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """Load a TOML config. Relative paths inside it are relative to the file."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None

        def beside(p: str) -> str:  # normalized, so messages say runs/x, not examples/../runs/x
            return os.path.normpath(path.parent / p)

        if "banks" in data and isinstance(data["banks"], list):
            data["banks"] = [beside(b) if isinstance(b, str) else b for b in data["banks"]]
        if isinstance(data.get("db"), str) and not data["db"].startswith(LAKE_PREFIX):
            data["db"] = beside(data["db"])
        store = data.get("store")
        if isinstance(store, dict) and isinstance(store.get("data_path"), str):
            store["data_path"] = beside(store["data_path"])
        training = data.get("training")
        if isinstance(training, dict) and isinstance(training.get("adapters"), str):
            training["adapters"] = beside(training["adapters"])
        prompts = data.get("prompts")
        if isinstance(prompts, dict):
            for name, value in prompts.items():
                if isinstance(value, dict) and set(value) == {"file"}:
                    template = Path(beside(str(value["file"])))
                    try:
                        prompts[name] = template.read_text(encoding="utf-8")
                    except OSError as e:
                        raise ConfigError(
                            f"{path}: prompts.{name}: cannot read {template}: {e.strerror}"
                        ) from None
        return cls.validated(data, source=str(path))

    @classmethod
    def validated(cls, data: dict, source: str = "config") -> RunConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"{source}: {_first_error(e)}") from None

    def with_run_id(self) -> RunConfig:
        """This config with its run id fixed: the configured one, else a new unique one. Fixed
        up front, so an interrupted run can be resumed by the id it printed."""
        if self.run_id is not None:
            return self
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return self.model_copy(update={"run_id": f"run-{stamp}-{secrets.token_hex(2)}"})

    def with_domains(self, domains: Sequence[object] = ()) -> RunConfig:
        """This config with more own domains (Domain instances or import paths)."""
        return self.with_overrides(domains=(*self.domains, *domains)) if domains else self

    def with_overrides(self, **changes: object) -> RunConfig:
        """A copy with the given fields replaced (None values are ignored), re-validated."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return RunConfig.validated(data, source="overrides")


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    # A whole-config check names its own keys in the message.
    return f"{where}: {msg}{more}" if where else f"{msg}{more}"
