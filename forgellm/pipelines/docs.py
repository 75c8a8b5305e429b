"""The documents folder of `forge pipeline cpt-ift`, checked before anything starts: what will be read,
what is skipped and why (binary files counted apart), and a clear stop when nothing is left."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from forgellm.errors import ErrorCode, ForgeError

SNIFF_BYTES = 8192


@dataclass
class DocsInventory:
    folder: Path
    documents: list[str] = field(default_factory=list)
    binary: list[str] = field(default_factory=list)  # files that are binary content, whatever their suffix
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) for everything else not read

    def line(self) -> str:
        text = f"{len(self.documents)} documents"
        if self.binary:
            text += f", {len(self.binary)} binary file{'' if len(self.binary) == 1 else 's'} skipped"
        others = len(self.skipped) - len(self.binary)
        if others > 0:
            text += f", {others} other file{'' if others == 1 else 's'} skipped"
        return text


def _is_binary(path: Path) -> bool:
    from forgellm.data.read.encoding import binary_kind

    try:
        with open(path, "rb") as handle:
            return binary_kind(handle.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


def inventory(folder: Path) -> DocsInventory:
    """The folder as prepare's folder reader sees it (same suffix and skip rules), binary files apart."""
    from forgellm.data.read.readers import open_dataset

    if not folder.is_dir():
        raise ForgeError(
            f"The documents {folder} are not a folder.",
            fix="Give the folder of your domain documents (.md, .txt, .rst files), e.g. docs/.",
            code=ErrorCode.FILE_NOT_FOUND if not folder.exists() else ErrorCode.USAGE_INVALID,
            data={"path": str(folder)},
        )
    found = DocsInventory(folder)
    try:
        info = open_dataset(folder).info
        names, skipped = list(info.files), list(info.skipped)
    except ForgeError as exc:
        if exc.code != ErrorCode.DATA_EMPTY:
            raise
        files = [p for p in folder.rglob("*") if p.is_file()]
        names, skipped = [], [(p.relative_to(folder).as_posix(), "not a text document") for p in files]
    for name, why in skipped:
        if _is_binary(folder / name):
            found.binary.append(name)
            why = "binary file"
        found.skipped.append((name, why))
    for name in names:  # a binary file under a text suffix (.md) would only be rejected row by row: skip it now
        if _is_binary(folder / name):
            found.binary.append(name)
            found.skipped.append((name, "binary file"))
        else:
            found.documents.append(name)
    if not found.documents:
        listed = ", ".join(f"{name} ({why})" for name, why in found.skipped[:5])
        raise ForgeError(
            f"The documents folder {folder} has no text document to pre-train on"
            + (f": {len(found.skipped)} file(s) skipped ({listed})." if found.skipped else " (it is empty)."),
            fix="Put the domain documents in that folder as .md, .txt or .rst files (binary files such as PDFs "
            "must be converted to text first), then run the same command again.",
            code=ErrorCode.DOCS_EMPTY,
            data={"path": str(folder), "binary": len(found.binary), "skipped": len(found.skipped)},
        )
    return found
