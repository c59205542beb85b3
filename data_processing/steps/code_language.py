"""Programming language of a code document, from its metadata or, when that is absent, from its content.

Real code corpora come with a `language` field (The Stack's `lang`, mapped through a source's
`metadata_fields`), with a file path, or with neither (plain `{"id", "text"}` JSONL). In that order:

1. `language` in the metadata (a source's `language:` option sets it for every document);
2. the file extension of a path-like metadata value (`path`, `url`, a renamed field) or of the record id;
3. a shebang line (`#!/usr/bin/env python3`);
4. Magika, Google's content-type classifier (a small ONNX model shipped inside the `magika` wheel,
   so it runs offline); its high-confidence mode answers `txt` / `unknown` when it is unsure.

Names are normalised (`Python` -> `python`, `C++` -> `cpp`, `C#` -> `csharp`, `bash` -> `shell`), so that
the allowed-language list of the code rules matches whatever spelling a corpus uses.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

EXTENSION_LANGUAGES = {
    ".py": "python",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".java": "java",
    ".js": "javascript",
    ".mjs": "javascript",
    ".ts": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".sh": "shell",
    ".bash": "shell",
    ".sql": "sql",
    ".cs": "csharp",
    ".php": "php",
    ".rb": "ruby",
    ".kt": "kotlin",
    ".scala": "scala",
    ".swift": "swift",
}

LANGUAGE_ALIASES = {
    "c++": "cpp",
    "c#": "csharp",
    "cs": "csharp",
    "bash": "shell",
    "sh": "shell",
    "zsh": "shell",
    "js": "javascript",
    "node": "javascript",
    "ts": "typescript",
    "golang": "go",
    "py": "python",
    "python3": "python",
    "rb": "ruby",
    "rs": "rust",
    "kt": "kotlin",
}

# metadata keys the pipeline sets itself: never a path of the code file
_NOT_PATHS = frozenset({"domain", "source", "file", "line", "language", "language_from"})
_SHEBANG = re.compile(r"#![ \t]*(\S+)(?:[ \t]+(?:-\S+[ \t]+)*(\S+))?")
_INTERPRETERS = {
    "python": "python",
    "bash": "shell",
    "sh": "shell",
    "zsh": "shell",
    "dash": "shell",
    "ksh": "shell",
    "node": "javascript",
    "nodejs": "javascript",
    "ts-node": "typescript",
    "ruby": "ruby",
    "php": "php",
}
_NOT_CODE = frozenset({"txt", "unknown", "empty", "undefined"})


def normalize_language(name: str) -> str:
    key = name.strip().lower()
    return LANGUAGE_ALIASES.get(key, key)


def language_from_path(value: str) -> str | None:
    return EXTENSION_LANGUAGES.get(PurePosixPath(value).suffix.lower())


def language_from_shebang(text: str) -> str | None:
    match = _SHEBANG.match(text)
    if not match:
        return None
    program = PurePosixPath(match.group(1)).name
    if program == "env" and match.group(2):
        program = match.group(2)
    program = program.rstrip("0123456789.")  # python3.12 -> python
    return _INTERPRETERS.get(program)


_MAGIKA = None


def _magika():
    """Loaded once per process (the local executor runs many tasks in one process)."""
    global _MAGIKA
    if _MAGIKA is None:
        from magika import Magika

        _MAGIKA = Magika()
    return _MAGIKA


def language_from_content(text: str) -> str | None:
    label = str(_magika().identify_bytes(text.encode("utf-8", "replace")).output.label)
    return None if label in _NOT_CODE else normalize_language(label)


def detect_language(text: str, metadata: dict, doc_id: str = "") -> tuple[str | None, str]:
    """(language or None, where it came from: metadata / extension / shebang / detector / none)."""
    language = metadata.get("language")
    if isinstance(language, str) and language.strip():
        return normalize_language(language), "metadata"
    candidates = [v for k, v in metadata.items() if k not in _NOT_PATHS and isinstance(v, str)]
    for value in [*candidates, doc_id]:
        language = language_from_path(value)
        if language:
            return language, "extension"
    language = language_from_shebang(text)
    if language:
        return language, "shebang"
    language = language_from_content(text)
    return (language, "detector") if language else (None, "none")
