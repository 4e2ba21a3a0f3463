"""The package's types hold for a caller: mypy on tests/support/typing/typed_tasks.py, through taskq's py.typed."""

from __future__ import annotations

import re
from pathlib import Path

import mypy.api

from tests.support import ROOT

SNIPPET = ROOT / "tests" / "support" / "typing" / "typed_tasks.py"
EXPECT = re.compile(r"#\s*expect:\s*(?P<said>[^`]+?)\s*$")  # no backquote: not the docstring's
REPORTED = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$")
REVEALED = re.compile(r'^Revealed type is "(?P<type>[^"]+)"$')
CODE = re.compile(r"\[(?P<code>[a-z-]+)\]$")


def expected(path: Path) -> dict[int, list[str]]:
    """``{line: ["error [arg-type]", "reveal int", ...]}`` from the snippet's own comments."""
    found = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = EXPECT.search(line)
        if match:
            found[number] = sorted(part.strip() for part in match["said"].split(";"))
    return found


def reported(output: str, path: Path) -> dict[int, list[str]]:
    """What mypy said about each line of ``path``, in the snippet's own terms."""
    found: dict[int, list[str]] = {}
    for line in output.splitlines():
        match = REPORTED.match(line)
        if not match or Path(match["path"]).resolve() != path:
            continue
        text = match["text"]
        revealed = REVEALED.match(text)
        code = CODE.search(text)
        if revealed:
            said = f"reveal {revealed['type'].replace('builtins.', '')}"  # older mypy qualifies builtins
        elif match["kind"] == "error" and code:
            said = f"error [{code['code']}]"
        else:
            said = f"{match['kind']}: {text}"
        found.setdefault(int(match["line"]), []).append(said)
    return {line: sorted(said) for line, said in found.items()}


def test_task_keeps_the_function_signature_for_mypy(tmp_path, monkeypatch):
    # taskq is read from the checkout under test (mypy can't see an editable install's import
    # hook); errors inside taskq itself are not this test's business, only what a caller sees.
    monkeypatch.setenv("MYPYPATH", str(ROOT))
    stdout, stderr, status = mypy.api.run([
        "--follow-imports=silent",
        "--ignore-missing-imports",
        "--no-error-summary",
        "--show-error-codes",
        "--show-absolute-path",
        "--cache-dir", str(tmp_path / "mypy-cache"),
        str(SNIPPET),
    ])
    assert status in (0, 1), f"mypy failed to run (status {status}): {stderr or stdout}"
    want = expected(SNIPPET)
    assert want, "the snippet states no expectations"
    got = reported(stdout, SNIPPET)
    wrong = {
        line: {"expected": want.get(line), "mypy said": got.get(line, [])}
        for line in sorted(set(want) | set(got))
        if got.get(line, []) != want.get(line, [])
    }
    assert not wrong, f"mypy on {SNIPPET.name}:\n{stdout}"
