"""The prompt contract: what every stage puts around a problem before a model sees it.

One typed config section (`prompt:` in the SFT-data, SFT, DPO-pairs, DPO and eval configs) fixes the
system prompt, the instruction appended to a problem of each kind and the chat template the trained
model uses. SFT data, DPO pairs and evaluation render their prompts with `PromptContract.render`
(or `apply` for a conversation), each stage records the contract it used in its output, and a stage
that meets a model or records prepared under another contract warns with the difference: a model
fine-tuned without eval's "\\boxed{}" instruction scored 3.3% on held-out arithmetic, 50.0% with it.

    contract = PromptContract()                      # the defaults below
    contract.render("What is 2 + 3?", "math")
    -> [{"role": "user", "content": "What is 2 + 3?\\nPlease reason step by step, and put ..."}]
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megatron_infi.config.core import ConfigError, from_dict, to_dict

KINDS = ("math", "code", "choice", "open")
CONTRACT_FILE = "prompt_contract.json"  # written next to an exported model by the training stages
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = "Write the complete solution in one ```python code block."
CHOICE_INSTRUCTION = (
    'Think step by step, then finish with a line of the form "The answer is (X)" where X is the '
    "letter of the correct option."
)


class PromptContractWarning(UserWarning):
    """A model or records were prepared under another prompt contract than the one in use."""


@dataclass
class InstructionSuffixes:
    """The instruction appended (after a newline) to a problem of each kind; "" appends nothing."""

    math: str = (
        BOXED_INSTRUCTION  # Qwen2.5-Math / DeepSeek-R1 evaluation; the answer extractor reads \boxed{}
    )
    code: str = CODE_INSTRUCTION  # the scorers run the last ```python block
    choice: str = CHOICE_INSTRUCTION  # MMLU(-Pro) / GPQA: the scorer reads "The answer is (X)"
    open: str = ""  # open-ended requests (no verifiable answer)


@dataclass
class PromptContract:
    system_prompt: str = ""  # "" sends no system message (the chat template may add its own default)
    suffix: InstructionSuffixes = field(default_factory=InstructionSuffixes)
    # The template training installs and the exported model carries (generation stages use the model's
    # own): auto (the model's own; ChatML when it has none) | chatml | path/to/template.jinja
    chat_template: str = "auto"

    def validate(self) -> None:
        if self.chat_template not in ("auto", "chatml") and not self.chat_template.endswith(".jinja"):
            raise ConfigError(
                "chat_template", f"must be auto, chatml or a .jinja file, got {self.chat_template!r}"
            )

    def instruction(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown prompt kind {kind!r} (known: {', '.join(KINDS)})")
        return getattr(self.suffix, kind)

    def render(self, problem: str, kind: str) -> list[dict[str, str]]:
        """The messages a model is asked: [system], user = problem + the kind's instruction."""
        return self.apply([{"role": "user", "content": problem}], kind)

    def apply(self, messages: list[dict[str, str]], kind: str) -> list[dict[str, str]]:
        """A conversation rendered under the contract: the system prompt first unless the conversation
        has its own, the kind's instruction after its last user turn unless already there."""
        out = [dict(m) for m in messages]
        suffix = self.instruction(kind)
        users = [i for i, m in enumerate(out) if m["role"] == "user"]
        if suffix and users and not out[users[-1]]["content"].rstrip().endswith(suffix):
            out[users[-1]]["content"] = f"{out[users[-1]]['content'].rstrip()}\n{suffix}"
        if self.system_prompt and not any(m["role"] == "system" for m in out):
            out.insert(0, {"role": "system", "content": self.system_prompt})
        return out

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def digest(self) -> str:
        """A short name for the contract in messages and logs."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def differences(self, other: PromptContract) -> list[str]:
        """`field: 'ours' vs 'theirs'` for every field that differs."""
        return _diff(self.to_dict(), other.to_dict())

    @classmethod
    def from_record(cls, data: Any) -> PromptContract | None:
        """The contract stored in an output (records' meta, a report, prompt_contract.json), if it parses."""
        if not isinstance(data, dict):
            return None
        try:
            return from_dict(cls, data)
        except (ConfigError, TypeError):
            return None


def _diff(ours: dict, theirs: dict, prefix: str = "") -> list[str]:
    out = []
    for key in ours:
        name = f"{prefix}{key}"
        if isinstance(ours[key], dict):
            out += _diff(ours[key], theirs.get(key) or {}, f"{name}.")
        elif ours[key] != theirs.get(key):
            out.append(f"{name}: {ours[key]!r} vs {theirs.get(key)!r}")
    return out


def kind_of_record(meta: Any) -> str:
    """The prompt kind of an SFT record / preference pair / problem from its meta (task or domain)."""
    meta = meta if isinstance(meta, dict) else {}
    kind = meta.get("task") or meta.get("domain")
    if kind in KINDS:
        return kind
    if meta.get("tests"):
        return "code"
    return "math" if meta.get("answer") not in (None, "") else "open"


def read_model_contract(model_dir: str | Path) -> PromptContract | None:
    path = Path(model_dir) / CONTRACT_FILE
    if not path.is_file():
        return None
    try:
        return PromptContract.from_record(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError):
        return None


def warn_mismatch(contract: PromptContract, recorded: PromptContract, what: str, stage: str) -> None:
    differences = recorded.differences(contract)
    if differences:
        warnings.warn(
            f"{what} was prepared under prompt contract {recorded.digest} but {stage} uses {contract.digest}; "
            f"they differ in {'; '.join(differences)} (recorded vs {stage}). Scores drop when the prompts "
            "differ: set the same `prompt:` section in every stage's config.",
            PromptContractWarning,
            stacklevel=2,
        )


def check_model_contract(
    model_dir: str | Path, contract: PromptContract, stage: str
) -> PromptContract | None:
    """Warn when `model_dir` records a training contract that differs from `contract`; returns the
    recorded one (None for a model trained elsewhere, which records nothing)."""
    recorded = read_model_contract(model_dir)
    if recorded is not None:
        warn_mismatch(contract, recorded, f"model {model_dir}", stage)
    return recorded


class RecordTally:
    """How a stage treated the prompts of records it read: rendered now, or already under a contract."""

    def __init__(self, contract: PromptContract, stage: str):
        self.contract, self.stage = contract, stage
        self.counts = {"rendered": 0, "same_contract": 0, "other_contract": 0}
        self._warned = False

    def prepare(self, messages: list[dict[str, str]], meta: Any, where: str) -> list[dict[str, str]]:
        """`messages` as the stage trains on them: records prepared under a contract (meta.prompt_contract)
        are kept as they are (warned once when it is another one); raw records are rendered now."""
        recorded = PromptContract.from_record(meta.get("prompt_contract")) if isinstance(meta, dict) else None
        if recorded is None:
            self.counts["rendered"] += 1
            return self.contract.apply(messages, kind_of_record(meta))
        if recorded.to_dict() == self.contract.to_dict():
            self.counts["same_contract"] += 1
        else:
            self.counts["other_contract"] += 1
            if not self._warned:
                self._warned = True
                warn_mismatch(self.contract, recorded, f"records such as {where}", self.stage)
        return messages
