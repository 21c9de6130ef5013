"""Every figure printed in README.md and BUILD_NOTES.md comes from a committed JSON under docs/.

Each table (and each paragraph or list that quotes measured figures) is preceded by a marker
line naming where its figures come from:

    <!-- figures: docs/NAME.json[#key.key] [docs/OTHER.json ...] -->   the JSON a script wrote
    <!-- not figures: REASON -->                                        settings, names, tests

Every number in a marked block, rounded as printed, must equal a number of the named JSON
(or of the part after ``#``): as stored, or times 100 for a percentage. A table without a
marker fails; so does a number that the JSON does not hold.
"""

import json
import math
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ("README.md", "BUILD_NOTES.md")
MARKER = re.compile(r"^\s*<!-- (figures|not figures): (.+?) -->\s*$")
# A number standing alone: not part of a name (ResNet50, SE-WRN-16-8, stage2, 1e-4 inside
# a word), with an optional sign (ASCII or Unicode minus), thousands commas and an exponent.
NUMBER = re.compile(r"(?<![\w.\-+−/])([-+−]?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(e[-+]?\d+)?"
                    r"(?![\w.]*[A-Za-z_])")
CODE_SPAN = re.compile(r"`[^`]*`")
RATIO = re.compile(r"(?<![\w.])x(?=\d)")  # x1.37: a ratio, printed with an x


def blocks(path):
    """``(line number, marker kind, marker text or None, block lines)`` of every table and of
    every marked paragraph: a block runs to the next blank line."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().split("\n")
    found, i, in_code = [], 0, False
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            in_code = not in_code
        marker = None if in_code else MARKER.match(lines[i])
        is_table = not in_code and lines[i].lstrip().startswith("|")
        if marker or is_table:
            start = i + 1 if marker else i
            end = start
            while end < len(lines) and lines[end].strip():
                end += 1
            kind, text = marker.groups() if marker else (None, None)
            found.append((start + 1, kind, text, lines[start:end]))
            i = end
        else:
            i += 1
    return found


def printed_numbers(lines):
    """``(text, value, decimals, significant)`` of each number in the lines, table headers and
    separators left out (a table's first two lines)."""
    body = lines[2:] if lines[0].lstrip().startswith("|") else lines
    numbers = []
    for line in body:
        line = RATIO.sub(" ", CODE_SPAN.sub(" ", line))
        for match in NUMBER.finditer(line):
            sign, whole, fraction, exponent = match.groups()
            text = (("-" if sign in "-−" and sign else "") + whole.replace(",", "")
                    + (fraction or "") + (exponent or ""))
            decimals = len(fraction) - 1 if fraction else 0
            significant = len((whole + (fraction or "")[1:]).lstrip("0,")) or 1
            numbers.append((match.group(0), float(text), decimals, bool(exponent), significant))
    return numbers


def json_numbers(spec):
    """The numbers of ``docs/NAME.json[#key.key]``."""
    path, _, keys = spec.partition("#")
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        value = json.load(f)
    for key in filter(None, keys.split(".")):
        value = value[int(key)] if isinstance(value, list) else value[key]
    found = []

    def walk(item):
        if isinstance(item, bool) or item is None:
            return
        if isinstance(item, (int, float)):
            found.append(float(item))
        elif isinstance(item, dict):
            for child in item.values():
                walk(child)
        elif isinstance(item, list):
            for child in item:
                walk(child)

    walk(value)
    return found


def matches(printed, decimals, scientific, significant, stored):
    """Whether ``stored`` (or 100 x ``stored``) prints as ``printed`` at its precision."""
    for value in (stored, 100 * stored):
        if scientific:
            if value and printed and math.isclose(
                    float(f"{value:.{significant - 1}e}"), printed, rel_tol=1e-9):
                return True
        elif abs(value - printed) <= 0.5 * 10 ** -decimals + 1e-9 * max(1, abs(printed)):
            return True
    return False


def all_blocks():
    return [(path, *block) for path in DOCUMENTS for block in blocks(path)]


def test_every_table_says_where_its_figures_come_from():
    unmarked = [f"{path}:{line}: {lines[0][:60]}" for path, line, kind, _, lines in all_blocks()
                if kind is None]
    assert not unmarked, ("tables without a <!-- figures: docs/X.json --> or <!-- not figures: "
                          "why --> line above them:\n" + "\n".join(unmarked))


@pytest.mark.parametrize("path, line, kind, text, lines", [
    b for b in all_blocks() if b[2] == "figures"], ids=lambda v: v if isinstance(v, str) else "")
def test_printed_figures_equal_their_json(path, line, kind, text, lines):
    sources = text.split()
    for spec in sources:
        assert spec.startswith("docs/") and os.path.isfile(
            os.path.join(ROOT, spec.partition("#")[0])), f"{path}:{line}: no file {spec}"
    stored = [v for spec in sources for v in json_numbers(spec)]
    missing = [shown for shown, value, decimals, scientific, significant in
               printed_numbers(lines)
               if not any(matches(value, decimals, scientific, significant, v) for v in stored)]
    assert not missing, (f"{path}:{line}: figures not in {', '.join(sources)}: "
                         f"{', '.join(missing)}")


def test_each_figures_json_names_the_command_that_wrote_it():
    for spec in {s.partition("#")[0] for _, _, kind, text, _ in all_blocks()
                 if kind == "figures" for s in text.split()}:
        with open(os.path.join(ROOT, spec), encoding="utf-8") as f:
            report = json.load(f)
        assert "command" in json.dumps(report), f"{spec} does not record its command"


def test_the_check_catches_a_figure_that_is_not_in_the_json():
    numbers = printed_numbers(["| a | b |", "|---|---|", "| ResNet50 (5.82) | 93.10% x1.37 |",
                               "| `cbr(32,3,2)` | 14,184,123, -0.12 ± 0.18, 1.2e-7 |"])
    assert [n[0] for n in numbers] == ["5.82", "93.10", "1.37", "14,184,123", "-0.12", "0.18",
                                      "1.2e-7"]
    stored = [5.8249, 0.9310, 1.374, 14184123, -0.1201, 0.184, 1.23e-7]
    for (_, value, decimals, scientific, significant), v in zip(numbers, stored):
        assert matches(value, decimals, scientific, significant, v)
    assert not matches(93.10, 2, False, 4, 0.9320)
    assert not matches(1.2e-7, 0, True, 2, 1.3e-7)
