"""Every reference in the repository's text files points at something the repository has.

A user has only the repository's files, so a comment, docstring, recipe or document that cites
a file must cite one that exists, and a section it names must exist in that file. The text
files are those git knows (tracked, or new and not ignored) ending in ``.py``, ``.md``,
``.flags``, ``.sh``, ``.txt`` or ``.cfg``, and ``.ci/run``. What counts as a reference:

- the names of the developers' notes, which are not part of the repository
  (``NOTES_NAMES``): never allowed;
- a path that starts with one of the repository's top-level folders (``ssal_keras/``,
  ``models/``, ``docs/``, ...; read from the file list): the file or folder must exist. A path
  that starts with ``../`` is read relative to the file that holds it (recipes name files
  beside them). Placeholders are allowed only as the docs write them: an upper-case word
  (``models/RECIPE.flags``), a ``*`` (``models/*.flags``) or a Python format field
  (``models/{recipe}.flags``); such a pattern must match at least one file;
- a module path relative to the package (``training/flagfile.py``: a ``.py`` path that starts
  with a subpackage of ``ssal_keras``): the module must exist;
- a bare ``NAME.md``: some file of the repository must have that name;
- a numbered section of a document in ``docs/`` (``docs/method.md, section 4``,
  ``sections 3-5``, ``section 11.1, item 14``): the document must have a heading with that
  number, and the section a table row or list item with that item;
- a section named by its title (``BUILD_NOTES.md, "Fair test"``): the document must have a
  heading that starts with it.

References may wrap across lines (comment markers and indentation are skipped). Paths that
runs and exports write (``runs/NAME``, ``metrics.json``, ``export.json``) are not repository
files and are not checked. This file's own examples are broken on purpose and are left out.
"""

import bisect
import fnmatch
import os
import posixpath
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEXT_SUFFIXES = (".py", ".md", ".flags", ".sh", ".txt", ".cfg")
TEXT_FILES = (".ci/run",)

# The developers' notes kept outside the repository. The names are spelled in pieces so that
# this file does not cite them itself.
_NOTES = ("AUTH" + "ORS", "SP" + "EC", "PIT" + "FALLS", "STY" + "LE")
NOTES_NAMES = tuple(name + ".md" for name in _NOTES)
FORBIDDEN = [
    re.compile(r"\b(?:%s)\.md\b" % "|".join(_NOTES)),
    re.compile(r"\b%s\b(?!_|\.md|\s*=)" % _NOTES[2]),  # cited without ".md"
    re.compile(r"\b%s (?:sections?\b|\d)" % _NOTES[0]),  # cited without ".md"
    re.compile(r"\b%s(?: sections?\b|'s\b|:)|\bthe %s\b" % (_NOTES[1], _NOTES[1])),
    re.compile(r"\.\./" + "shared\\b|/work/" + "shared\\b"),
]

_PLACEHOLDER_WORD = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FORMAT_FIELD = re.compile(r"\{[^{}\n]*\}")
_NUMBER = r"\d+(?:\.\d+)*"
_NUMBERS = rf"{_NUMBER}(?:\s*(?:,|and|-|–|to)\s*{_NUMBER})*"
_ITEMS = r"\w+(?:\s*(?:,|and)\s*\w+)*"
_SECTION = re.compile(
    rf"((?:\.\./)*docs/[\w-]+\.md)`?,?\s+sections?\s+({_NUMBERS})(?:,\s*items?\s+({_ITEMS}))?")
_TITLE = re.compile(r"((?:\.\./)*(?:[\w-]+/)*[\w-]+\.md)`?(?:,\s*|\s+\(\s*)\\?([\"'])(.+?)\\?\2")
_BARE_MD = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_NUMBERED_HEADING = re.compile(rf"^#{{1,6}}\s+({_NUMBER})\.?\s")


def repository_files(root=ROOT):
    """Every file of the repository (tracked, or new and not ignored), relative to ``root``."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
            capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        listed = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d == ".ci" or not (
                d.startswith(".") or d.endswith(".egg-info") or d in ("runs", "build"))]
            listed += [os.path.relpath(os.path.join(folder, n), root).replace(os.sep, "/")
                       for n in names]
    return sorted({f for f in listed if os.path.isfile(os.path.join(root, f))})


class Repository:
    """The files and folders a reference may name, and the headings of its documents."""

    def __init__(self, files, read):
        self.files = set(files)
        self.folders = {posixpath.dirname(f) for f in files} - {""}
        for folder in list(self.folders):
            while folder:
                self.folders.add(folder)
                folder = posixpath.dirname(folder)
        self.top_folders = sorted({f.split("/")[0] for f in files if "/" in f})
        self.subpackages = sorted({f.split("/")[1] for f in files
                                   if f.startswith("ssal_keras/") and f.count("/") >= 2})
        self.basenames = {posixpath.basename(f) for f in files}
        self._read = read
        self._headings = {}

    def exists(self, path):
        return path.rstrip("/") in self.files | self.folders

    def matches(self, pattern):
        pattern = pattern.rstrip("/")
        return any(fnmatch.fnmatchcase(p, pattern) for p in self.files | self.folders)

    def headings(self, path):
        """``(level, text, line index)`` of every heading of a Markdown file."""
        if path not in self._headings:
            lines = self._read(path).splitlines()
            found = []
            for i, line in enumerate(lines):
                m = _HEADING.match(line)
                if m:
                    found.append((len(line) - len(line.lstrip("#")), m.group(1), i))
            self._headings[path] = (found, lines)
        return self._headings[path]

    def section(self, path, number):
        """The lines of section ``number`` of a document, or None if it has no such heading."""
        found, lines = self.headings(path)
        for k, (_, text, i) in enumerate(found):
            m = _NUMBERED_HEADING.match("# " + text)
            if m and m.group(1) == number:
                end = found[k + 1][2] if k + 1 < len(found) else len(lines)
                return lines[i + 1:end]
        return None

    def resolve_document(self, name, holder):
        """The document a title reference names: a path, else the file of that name at the
        top level, beside the referring file, or the only one."""
        if "/" in name:
            path = posixpath.normpath(posixpath.join(posixpath.dirname(holder), name)) \
                if name.startswith("../") else name
            return path if path in self.files else None
        for path in (name, posixpath.join(posixpath.dirname(holder), name)):
            if path in self.files:
                return path
        candidates = [f for f in self.files if posixpath.basename(f) == name]
        return candidates[0] if len(candidates) == 1 else None


def _joined(text):
    """The text with every line break, the next line's indentation and comment marker turned
    into one space, and the offset at which each original line starts."""
    parts, starts, offset = [], [], 0
    for i, line in enumerate(text.split("\n")):
        if i:
            line = re.sub(r"^\s*(?:#+:?|//)?\s*", "", line)
            parts.append(" ")
            offset += 1
        starts.append(offset)
        parts.append(line)
        offset += len(line)
    return "".join(parts), starts


def _normal(text):
    text = re.sub(r"[\"']\s+[\"']", "", text)  # Python's implicit string concatenation
    text = text.replace("`", "").replace("*", "")
    return " ".join(text.lower().split())


def _split_numbers(text):
    """``"5, 6, 9.7 and 9.9"`` -> the numbers; a range ``4-6`` gives its two ends."""
    return re.findall(_NUMBER, text)


def problems_in(path, text, repo):
    """The broken references of one file: a list of ``"path:line: reference: why"``."""
    joined, starts = _joined(text)
    problems = []

    def report(position, reference, why):
        line = bisect.bisect_right(starts, position)
        problems.append(f"{path}:{line}: {reference}: {why}")

    for pattern in FORBIDDEN:
        for m in pattern.finditer(joined):
            report(m.start(), m.group(0), "the developers' notes are not part of the repository; "
                   "cite docs/authors_settings.md, docs/method.md or docs/stack_notes.md")

    # Paths from the top-level folders.
    fields = _FORMAT_FIELD.sub(lambda m: "{" + "_" * (len(m.group(0)) - 2) + "}", joined)
    tops = "|".join(re.escape(t) for t in repo.top_folders)
    for m in re.finditer(rf"(?<![\w./-])((?:\.\./)*(?:{tops})/[\w./*{{}}-]*)", fields):
        reference = m.group(1).rstrip(".")
        target = reference
        if target.startswith("../"):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if repo.exists(target):
            continue
        pattern = "/".join(
            ".".join("*" if _PLACEHOLDER_WORD.match(piece) else piece
                     for piece in component.split("."))
            for component in _FORMAT_FIELD.sub("*", target).split("/"))
        if "*" in pattern:
            if not repo.matches(pattern):
                report(m.start(), reference, "no repository file matches this pattern")
        else:
            report(m.start(), reference, "no such file or folder in the repository")

    # Module paths relative to the package (training/flagfile.py).
    if repo.subpackages:
        packages = "|".join(re.escape(p) for p in repo.subpackages)
        for m in re.finditer(rf"(?<![\w./-])((?:{packages})/[\w/]*\.py)\b", joined):
            if not repo.exists(m.group(1)) and not repo.exists("ssal_keras/" + m.group(1)):
                report(m.start(), m.group(1), "no such module in ssal_keras/")

    # Bare Markdown names.
    for m in _BARE_MD.finditer(joined):
        if m.group(1) not in repo.basenames and m.group(1) not in NOTES_NAMES:
            report(m.start(), m.group(1), "no file of that name in the repository")

    # Numbered sections (and items) of the documents in docs/.
    for m in _SECTION.finditer(joined):
        document, numbers, items = m.groups()
        if document.startswith("../"):
            document = posixpath.normpath(posixpath.join(posixpath.dirname(path), document))
        if document not in repo.files:
            continue  # reported as a missing path above
        numbers = _split_numbers(numbers)
        for number in numbers:
            lines = repo.section(document, number)
            if lines is None:
                report(m.start(), m.group(0), f"{document} has no section {number}")
            elif items and number == numbers[-1]:  # items belong to the last section named
                cells = set()
                for line in lines:
                    row = re.match(r"^\|\s*([^|]+?)\s*\|", line)
                    entry = re.match(r"^\s*(?:[-*]\s+)?(\w+)[.)]\s", line)
                    cells.update(x.group(1) for x in (row, entry) if x)
                for item in re.findall(r"\w+", items.replace("and", " ")):
                    if item not in cells:
                        report(m.start(), m.group(0),
                               f"section {number} of {document} has no item {item}")

    # Sections named by their title.
    for m in _TITLE.finditer(joined):
        document = repo.resolve_document(m.group(1), path)
        if document is None:
            continue  # a missing file is reported above
        title = _normal(m.group(3))
        headings = [_normal(re.sub(rf"^{_NUMBER}\.?\s+", "", text))
                    for _, text, _ in repo.headings(document)[0]]
        if not title or not any(h.startswith(title) for h in headings):
            report(m.start(), m.group(0), f"{document} has no heading that starts with "
                   f"{m.group(3)!r}")
    return problems


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as stream:
        return stream.read()


def _text_files(files):
    # This file is left out: its examples below are broken on purpose.
    this = os.path.relpath(os.path.abspath(__file__), ROOT).replace(os.sep, "/")
    return [f for f in files if (f.endswith(TEXT_SUFFIXES) or f in TEXT_FILES) and f != this]


def test_every_reference_exists():
    files = repository_files()
    assert "setup.py" in files and "docs/method.md" in files, "the file list is incomplete"
    repo = Repository(files, _read)
    problems = []
    for path in _text_files(files):
        problems += problems_in(path, _read(path), repo)
    assert not problems, "Broken references:\n" + "\n".join(problems)


# --- The checker itself finds what it must find, and nothing else --------------------------
def _fake_repository():
    documents = {
        "docs/method.md": "# Method\n\n## 1. The idea\n\ntext\n\n## 3. Backbones\n\n"
                          "### 3.1 ResNet\n\n| # | x |\n|---|---|\n| 14 | y |\n",
        "BUILD_NOTES.md": "# Notes\n\n## Fair test on Fashion-MNIST (issue 10)\n",
        "README.md": "## Train\n",
    }
    files = list(documents) + ["models/a_baseline.flags", "models/groupings/g.txt",
                               "ssal_keras/training/run.py", "ssal_keras/__init__.py",
                               "docs/data.json", "setup.py"]
    return Repository(files, lambda path: documents[path])


@pytest.mark.parametrize("line", [
    "# see " + NOTES_NAMES[0] + " 9.3",
    "(" + _NOTES[0] + " section 9)",
    "(" + _NOTES[2] + ": XLA with tf.distribute)",
    "(" + _NOTES[1] + " section 4)",
    "# " + NOTES_NAMES[2] + ", absl",
    "the ../" + "shared/ notes",
    "--flagfile=models/missing.flags",
    "models/groupings/h.txt",
    "python ssal_keras/missing.py",
    "models/{recipe}.yaml",
    "models/RECIPE.json",
    "see training/missing.py",
    "explained in NOTES.md",
    "docs/method.md, section 2",
    "docs/method.md, sections 1 and 5",
    "docs/method.md, section 3.1, item 15",
    "(`docs/method.md`, section 4)",
    'BUILD_NOTES.md, "Quick start"',
    "(README.md, 'Deploy')",
])
def test_a_broken_reference_is_reported(line):
    problems = problems_in("ssal_keras/x.py", "a = 1\n" + line + "\n", _fake_repository())
    assert len(problems) == 1 and problems[0].startswith("ssal_keras/x.py:2: "), problems


@pytest.mark.parametrize("text", [
    "--flagfile=models/a_baseline.flags and models/groupings/",
    "python -m ssal_keras.train --flagfile=models/RECIPE.flags --model_dir=runs/NAME",
    'f"--flagfile=models/{recipe}.flags", models/*_baseline.flags',
    "f\"models/a_{record['config']}.flags\"",
    "the recipe reads ../docs/data.json",
    "runs/NAME/metrics.json, export.json, `runs/x/run.json`; training/run.py",
    "README.md and BUILD_NOTES.md; ssal_keras/training/ and keras/train.py:276-277",
    "docs/method.md, sections 1 and 3\n# (docs/method.md, section 3.1, item 14), docs/method.md,\n"
    "# section 1; `docs/method.md`, section 3",
    'BUILD_NOTES.md, "Fair test" and (README.md, "Train")',
    "(BUILD_NOTES.md, 'Fair test on \"\n        \"Fashion-MNIST')",
    "--calibration_data=" + _NOTES[1] + " and " + _NOTES[0] + "_WRN_STYLE",
    _NOTES[0] + ' = "docs/method.md, section {}"; ' + _NOTES[0] + ".format(1)",
])
def test_a_valid_reference_passes(text):
    assert problems_in("models/x.flags", text, _fake_repository()) == []
