"""Intent accuracy of the bots' offline matcher on held-out utterances of the demo flows.

The matchers are trained from the examples of the demo workspace's bot flows, exactly as the
server does at start-up (``engine.bots.BotRunner``), and asked about the utterances in
``bench/data/intents_heldout.yaml``, which are not examples. Per language: top-1 accuracy,
macro F1 over the intents, the fallback rate (in-domain utterances under the flow's
confidence threshold: the bot says "sorry?" although it could have known), the share of
off-topic words the threshold turns away, and the training time per flow.

    python bench/intents.py              # the matcher as shipped, plus the README line
    python bench/intents.py --compare    # one model per language vs one for both, and C

``evaluate()`` is importable (bench/chat.py prints its line too).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sklearn.metrics import f1_score

from opportune.ml.intents import IntentMatcher
from opportune.workspace import load_workspace
from opportune.workspace.bots import BotFlowDoc

HELDOUT = Path(__file__).parent / "data" / "intents_heldout.yaml"
NONE = "_none"  # the held-out file's off-topic utterances


@dataclass
class LanguageScore:
    n: int = 0
    correct: int = 0
    under_threshold: int = 0  # in-domain utterances the bot would answer with the fallback
    off_topic: int = 0
    off_topic_rejected: int = 0
    truth: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.under_threshold / self.n if self.n else 0.0

    @property
    def macro_f1(self) -> float:
        return float(f1_score(self.truth, self.predicted, average="macro", zero_division=0))

    @property
    def off_topic_rejection(self) -> float:
        return self.off_topic_rejected / self.off_topic if self.off_topic else 0.0


@dataclass
class IntentReport:
    languages: dict[str, LanguageScore]
    training_seconds: dict[str, float]  # per flow

    def line(self) -> str:
        """The README performance table's row."""
        parts = ", ".join(
            f"{lang} {s.accuracy:.1%} (macro F1 {s.macro_f1:.2f}, fallback {s.fallback_rate:.1%})"
            for lang, s in sorted(self.languages.items())
        )
        slowest = max(self.training_seconds.values(), default=0.0)
        return (
            f"| Bot intent accuracy, held-out demo utterances | {parts}; "
            f"training at start-up ≤ {slowest * 1000:.0f} ms per flow |"
        )


def demo_flows() -> dict[str, BotFlowDoc]:
    from opportune.api.app import EXAMPLE_WORKSPACE

    return load_workspace(EXAMPLE_WORKSPACE).bot_flows


def load_heldout(path: Path = HELDOUT) -> dict[str, dict[str, dict[str, list[str]]]]:
    """flow -> intent -> language -> utterances."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data  # type: ignore[no-any-return]


def evaluate(
    flows: Mapping[str, BotFlowDoc] | None = None,
    heldout: Mapping[str, Mapping[str, Mapping[str, list[str]]]] | None = None,
    *,
    matchers: Mapping[str, IntentMatcher] | None = None,
    per_language: bool = True,
    c: float = 10.0,
) -> IntentReport:
    """Score each flow's matcher (trained here unless ``matchers`` are given) on the
    held-out utterances, per language."""
    flows = flows if flows is not None else demo_flows()
    heldout = heldout if heldout is not None else load_heldout()
    scores: dict[str, LanguageScore] = {}
    seconds: dict[str, float] = {}
    for name, doc in flows.items():
        flow = doc.to_core()
        if matchers is not None and name in matchers:
            matcher = matchers[name]
        else:
            examples = {i: intent.examples for i, intent in flow.intents.items()}
            matcher = IntentMatcher(examples, per_language=per_language, c=c)
        seconds[name] = matcher.training_seconds
        for intent, by_lang in heldout.get(name, {}).items():
            for lang, utterances in by_lang.items():
                s = scores.setdefault(lang, LanguageScore())
                for text in utterances:
                    got, confidence = matcher.predict(text, lang)
                    confident = confidence >= flow.threshold
                    if intent == NONE:
                        s.off_topic += 1
                        s.off_topic_rejected += not confident
                        continue
                    s.n += 1
                    s.correct += got == intent
                    s.under_threshold += not confident
                    s.truth.append(f"{name}/{intent}")
                    s.predicted.append(f"{name}/{got}")
    return IntentReport(scores, seconds)


def _print(report: IntentReport, title: str) -> None:
    print(title)
    for lang, s in sorted(report.languages.items()):
        print(
            f"  {lang}: accuracy {s.accuracy:.1%} ({s.correct}/{s.n}), macro F1 "
            f"{s.macro_f1:.3f}, fallback rate {s.fallback_rate:.1%}, off-topic turned "
            f"away {s.off_topic_rejection:.0%} of {s.off_topic}"
        )
    times = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in report.training_seconds.items())
    print(f"  training: {times}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", action="store_true", help="per-language vs joint, and C")
    args = parser.parse_args()
    flows = demo_flows()
    heldout = load_heldout()
    if args.compare:
        for per_language in (True, False):
            for c in (1.0, 10.0, 100.0):
                started = time.perf_counter()
                report = evaluate(flows, heldout, per_language=per_language, c=c)
                kind = "per language" if per_language else "both languages"
                took = time.perf_counter() - started
                _print(report, f"{kind}, C={c:g} ({took:.2f} s with scoring)")
        return
    report = evaluate(flows, heldout)
    _print(report, "the matcher as shipped (one model per language, C=10)")
    print(report.line())


if __name__ == "__main__":
    main()
