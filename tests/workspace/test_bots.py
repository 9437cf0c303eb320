"""Bot flow documents: the demo's flows load, and every mistake is reported at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.workspace import ConfigError, load_workspace

QUEUES = """kind: queue
name: support
---
kind: queue
name: loans
---
kind: segment
name: vip
condition: {attribute: device, equals: mobile}
"""

# Line numbers matter below: the tests point at them.
FLOW = """kind: botFlow
name: faq
languages: [en, es]
start: hi
handoverQueue: support
handoverText: {en: Passing you over, es: Te paso}
fallback:
  text: {en: "Sorry?", es: "¿Perdón?"}
intents:
  - name: card
    step: menu
    examples:
      en: [activate my card, new card, card activation]
      es: [activar mi tarjeta, tarjeta nueva, activación de tarjeta]
steps:
  - name: hi
    type: message
    text: {en: Hello, es: Hola}
    next: menu
  - name: menu
    type: buttons
    text: {en: Pick, es: Elige}
    buttons:
      - {label: {en: Card, es: Tarjeta}, step: check}
      - {label: {en: Person, es: Persona}, handover: true}
  - name: check
    type: condition
    if: {segment: vip}
    then: done
    else: person
  - name: done
    type: end
    text: {en: Done, es: Hecho}
  - name: person
    type: handover
    queue: loans
    text: {en: Bye, es: Adiós}
"""


def problems(tmp_path: Path, **files: str) -> list[str]:
    for name, text in {"queues.yaml": QUEUES, **files}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_workspace(tmp_path)
    return [str(p) for p in info.value.problems]


def test_the_demo_flows_load_and_the_maps_use_them() -> None:
    ws = load_workspace(EXAMPLE_WORKSPACE)
    assert set(ws.bot_flows) == {"help-faq", "loan-help"}
    assert ws.action_maps["help-centre-bot"].action.bot.flow == "help-faq"  # type: ignore[union-attr]
    chat = ws.action_maps["loan-struggle-chat"].action.chat
    assert chat is not None and chat.bot == "loan-help"
    for flow in ws.bot_flows.values():
        for intent in flow.intents:
            assert all(len(intent.examples[lang]) >= 12 for lang in ("en", "es")), intent.name


def test_a_good_flow_loads(tmp_path: Path) -> None:
    (tmp_path / "q.yaml").write_text(QUEUES)
    (tmp_path / "f.yaml").write_text(FLOW, encoding="utf-8")
    flow = load_workspace(tmp_path).bot_flows["faq"].to_core()
    assert flow.steps["person"].queue == "loans"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("start: hi", "start: hello", "f.yaml:4: start: unknown step 'hello'"),
        ("    next: menu", "    next: menus", "f.yaml:19: steps[0].next: unknown step 'menus'"),
        (
            "step: check}",
            "intent: cards}",
            "f.yaml:24: steps[1].buttons[0].intent: unknown intent 'cards'",
        ),
        ("    else: person", "    else: nobody", "f.yaml:30: steps[2].else: unknown step 'nobody'"),
        ("  - name: done", "  - name: hi", ["f.yaml:31: steps[3].name: step 'hi' defined twice",
         "f.yaml:29: steps[2].then: unknown step 'done'"]),
        ("{en: Done, es: Hecho}", "{en: Done}", "f.yaml:33: steps[3].text: no 'es' text (the flow "
         "speaks ['en', 'es'])"),
        (
            "es: [activar mi tarjeta, tarjeta nueva, activación de tarjeta]",
            "es: [activar mi tarjeta]",
            "f.yaml:14: intents[0].examples.es: at least 3 'es' examples",
        ),
        ("handoverQueue: support", "handoverQueue: sales", "f.yaml:5: handoverQueue: unknown "
         "queue 'sales'"),
        ("    queue: loans", "    queue: mortgages", "f.yaml:36: steps[4].queue: unknown queue "
         "'mortgages'"),
        ("if: {segment: vip}", "if: {segment: vips}", "f.yaml:28: steps[2].if: unknown segment "
         "'vips'"),
        (
            "if: {segment: vip}",
            "if: {score: loan_submitted, above: 0.5}",
            "f.yaml:28: steps[2].if: unknown outcome 'loan_submitted'",
        ),
        (
            "if: {segment: vip}",
            "if: {any: [{segment: vip}, {slot: x, above: yes}]}",
            "f.yaml:28: steps[2].if.any[1].above: a number",
        ),
        ("    type: end", "    type: ending", "f.yaml:31: steps[3]: Input tag 'ending' found using "
         "'type' does not match any of the expected tags: 'message', 'buttons', 'link', 'image', "
         "'video', 'ask', 'condition', 'handover', 'end'"),
        ("    text: {en: Hello, es: Hola}", "    txt: {en: Hello, es: Hola}",
         ["f.yaml:16: steps[0].text: Field required", "f.yaml:18: steps[0].txt: unknown field"]),
        ("{label: {en: Person, es: Persona}, handover: true}",
         "{label: {en: Person, es: Persona}, handover: true, step: hi}",
         "f.yaml:25: steps[1].buttons[1]: a button leads to exactly one of step, intent or "
         "handover: true"),
        ("    next: menu", "    next: hi", "f.yaml:16: steps[0]: step 'hi' loops back to itself"),
    ],
)  # fmt: skip
def test_each_mistake_is_named_at_its_line(
    tmp_path: Path, old: str, new: str, expect: str | list[str]
) -> None:
    assert old in FLOW
    got = problems(tmp_path, **{"f.yaml": FLOW.replace(old, new, 1)})
    assert got == (expect if isinstance(expect, list) else [expect])


def test_an_ask_step_checks_its_validation(tmp_path: Path) -> None:
    ask = FLOW.replace(
        "  - name: done\n    type: end\n",
        "  - name: done\n    type: ask\n    slot: pin\n    prompt: {en: 'PIN?', es: '¿PIN?'}\n"
        "    retry: {en: Again, es: Otra vez}\n    next: person\n"
        "    validation: {type: regex, pattern: '[0-9'}\n",
    ).replace("    text: {en: Done, es: Hecho}\n", "")
    (msg,) = problems(tmp_path, **{"f.yaml": ask})
    assert msg.startswith("f.yaml:37: steps[3].validation: pattern is not a regular expression")


def test_a_flow_name_used_twice_is_refused(tmp_path: Path) -> None:
    got = problems(tmp_path, **{"f.yaml": FLOW, "g.yaml": FLOW})
    assert got == ["g.yaml:1: name: botFlow 'faq' twice"]


MAP = """kind: actionMap
name: m
trigger: {segment: vip}
action:
  type: {type}
  {type}: {part}
"""


@pytest.mark.parametrize(
    ("kind", "part", "expect"),
    [
        ("bot", "{flow: help, title: Hi}", "runs unknown bot flow 'help'"),
        (
            "chat",
            "{queue: loans, bot: help, invitation: {title: Chat now}}",
            "starts the chat with unknown bot flow 'help'",
        ),
    ],
)
def test_maps_must_name_known_flows(tmp_path: Path, kind: str, part: str, expect: str) -> None:
    doc = MAP.replace("{type}", kind).replace("{part}", part)
    assert problems(tmp_path, **{"f.yaml": FLOW, "m.yaml": doc}) == [
        f"m.yaml:1: actionMap 'm' {expect}"
    ]
    good = doc.replace("help", "faq")
    (tmp_path / "m.yaml").write_text(good)
    assert load_workspace(tmp_path).action_maps["m"].name == "m"


def test_the_documented_example_loads(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "conversations.md"
    section = docs.read_text(encoding="utf-8").split("## Bot flows", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    for path in EXAMPLE_WORKSPACE.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "docs.yaml").write_text(example, encoding="utf-8")
    flow = load_workspace(tmp_path).bot_flows["card-help"].to_core()
    assert flow.steps["digits"].check.length == 4  # type: ignore[union-attr]
