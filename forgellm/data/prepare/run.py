"""`forge prepare`: stream the input in chunks through recipe, cleaning, filters, chat template,
tokenizer and split; resume after a crash; validate; publish under data/prepared/<fingerprint>/.

Work happens in data/prepared/.partial-<id>/ (id = settings + input path). After each chunk its files
and the manifest are written atomically, so `kill -9` loses at most the chunk in progress, and the
same command resumes. Only a validated output is renamed to its final name.
"""

from __future__ import annotations

import errno
import itertools
import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from forgellm.config.io import load_config
from forgellm.config.schema import ForgeConfig
from forgellm.data.prepare.chunk import ChunkProcessor, StageTimer
from forgellm.data.prepare.detect import detect_data_format, record_detection
from forgellm.data.prepare.keyindex import KeyIndex
from forgellm.data.prepare.manifest import (
    input_fingerprint,
    settings_fingerprint,
    short_hash,
    template_record,
    tokenizer_id,
)
from forgellm.data.prepare.mixture import MixturePlan, mixture_stats
from forgellm.data.prepare.neardup import NearDuplicateIndex
from forgellm.data.prepare.output import chunk_damage, chunk_paths, merge_chunks, write_chunk
from forgellm.data.prepare.splits import SplitAssigner
from forgellm.data.prepare.summary import chunk_summary, nothing_left, rejects_data, release_memory
from forgellm.data.prepare.validate import validate_outputs
from forgellm.data.read.records import BadRow, Record
from forgellm.data.token_stats import counting_for, prepared_text_stats
from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.project.layout import PreparedLayout, ProjectLayout
from forgellm.project.lock import locked
from forgellm.project.manifest import Manifest
from forgellm.project.prepared import PreparedData, PreparedStats, SplitCounts

_MIN_ROWS_FOR_ERROR_RATE = 50


@dataclass
class PrepareResult:
    """What `prepare_dataset` hands on: the published record (train takes it) and the config it prepared
    with (data.format and data.recipe filled in when they were detected)."""

    prepared: PreparedData
    config: ForgeConfig
    checks: list[dict[str, Any]] = field(default_factory=list)
    resumed_chunks: int = 0
    redone_chunks: int = 0  # finished chunks found damaged on resume, and prepared again
    already_prepared: bool = False

    @property
    def output_dir(self) -> Path:
        return self.prepared.folder

    @property
    def stats(self) -> PreparedStats:
        assert self.prepared.stats is not None, "a published preparation has its stats.json"
        return self.prepared.stats

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "already_prepared": self.already_prepared,
            "resumed_chunks": self.resumed_chunks,
            "redone_chunks": self.redone_chunks,
            "checks": self.checks,
            "stats": self.stats.to_dict(),
        }


@dataclass
class PrepareHooks:
    """Progress callbacks for the CLI; the library itself prints nothing."""

    step: Callable[[str], None] = lambda _message: None
    rows: Callable[[int, int | None], None] = lambda _done, _total: None  # rows done, estimated total


_BYTES_PER_ROW_IN_FLIGHT = 20_000  # text, messages and token lists as Python objects: generous for chat data


def default_chunk_rows() -> int:
    """Rows per chunk: an eighth of the free memory for rows in flight, between 500 and 5,000 rows
    (larger chunks gain little speed and lose more work to a crash)."""
    import psutil

    budget = psutil.virtual_memory().available / 8
    return int(max(500, min(5_000, budget // _BYTES_PER_ROW_IN_FLIGHT)))


def load_project_config(project_dir: Path) -> ForgeConfig:
    """forge.yaml of the project `forge prepare` runs in (read once, by the command)."""
    if not ProjectLayout(project_dir).config_file.is_file():
        raise ForgeError(
            f"`forge prepare` needs a plan with a target model, and {project_dir} has no forge.yaml.",
            fix="Run `forge init` here (it targets the offline model smollm2-135m; change model.ref to choose "
            "another), then `forge prepare FILE` again.",
            code=ErrorCode.PROJECT_NOT_FOUND,
            data={"path": str(project_dir)},
        )
    return load_config(project_dir).config


@locked("prepare")  # two prepares at once would mix their chunks
def prepare_dataset(
    layout: ProjectLayout,
    config: ForgeConfig,
    input_path: Path | None,
    *,
    restart: bool = False,
    chunk_rows: int | None = None,
    hooks: PrepareHooks | None = None,
) -> PrepareResult:
    """Prepare `input_path` for the project with `config` (its forge.yaml, loaded by the caller); None
    prepares the mixture of forge.yaml's data.sources."""
    layout = ProjectLayout(layout.root.resolve())
    hooks = hooks or PrepareHooks()
    if input_path is None:
        return _prepare_mixture(layout, config, restart=restart, chunk_rows=chunk_rows, hooks=hooks)
    input_path = input_path.resolve()
    detection = None
    if config.data.format == "auto":
        hooks.step("Detecting the data format")
        config, detection = detect_data_format(layout, input_path, config)
    run = _PrepareRun(layout, input_path, config, hooks)
    result = run.execute(restart=restart, chunk_rows=chunk_rows or config.preprocessing.chunk_rows)
    if detection is not None:  # only what prepared successfully is written into forge.yaml
        record_detection(layout, input_path, detection)
    return result


def _prepare_mixture(
    layout: ProjectLayout, config: ForgeConfig, *, restart: bool, chunk_rows: int | None, hooks: PrepareHooks
) -> PrepareResult:
    """data.sources: each source found and its format settled, then one preparation over all of them."""
    from forgellm.data.prepare.sources import open_mixture, record_detections

    if not config.data.sources:
        raise ForgeError(
            "`forge prepare` without FILE prepares the mixture of data.sources, and forge.yaml has none.",
            fix="Run `forge prepare FILE`, or list the sources under data.sources in forge.yaml (README: Data "
            "mixtures).",
            code=ErrorCode.USAGE_INVALID,
        )
    mixture = open_mixture(layout, config, hooks.step)
    config = mixture.settled(config)
    anchor = mixture.sources[0].path  # checked to exist; names the preparation in messages
    run = _PrepareRun(layout, anchor, config, hooks, mixture)
    result = run.execute(restart=restart, chunk_rows=chunk_rows or config.preprocessing.chunk_rows)
    record_detections(layout, mixture)  # as for one source: only what prepared successfully is written
    return result


class _PrepareRun:
    def __init__(
        self, layout: ProjectLayout, input_path: Path, config: ForgeConfig, hooks: PrepareHooks, mixture: Any = None
    ) -> None:
        self.project_dir, self.input_path, self.config, self.hooks = layout.root, input_path, config, hooks
        self.mixture = mixture  # sources.Mixture for data.sources, else None
        self.layout = layout
        self.timer = StageTimer()
        self.started = time.perf_counter()
        self.reading: Any = None  # the open Dataset's reading(), once the pass has read to the end

    def execute(self, *, restart: bool, chunk_rows: int | None) -> PrepareResult:
        from forgellm.models.loading import chat_setup

        if not self.input_path.exists():
            raise ForgeError(
                f"No such file or folder: {self.input_path}.",
                fix="Check the path of your data.",
                code=ErrorCode.FILE_NOT_FOUND,
                data={"path": str(self.input_path)},
            )
        from forgellm.config.consistency import check_consistent

        check_consistent(self.config)
        self.hooks.step(f"Loading the tokenizer and chat template of {self.config.model.ref}")
        setup = chat_setup(
            self.config.model.ref, self.config.model.chat_template, base_dir=self.project_dir, progress=self.hooks.step
        )
        self.setup = setup
        self.hooks.step("Fingerprinting " + ("the sources" if self.mixture else self.input_path.name))
        fingerprint = self.mixture.fingerprint() if self.mixture else input_fingerprint(self.input_path)
        tokenizer = tokenizer_id(setup)
        settings = settings_fingerprint(self.config, tokenizer, base_dir=self.project_dir)
        final = self.layout.prepared(short_hash(settings, fingerprint["sha256"])).folder
        published = PreparedData.load(final)
        if published is not None and published.complete and published.stats is not None and not restart:
            return PrepareResult(published, self.config, already_prepared=True)
        work = self.layout.partial_prepared(short_hash(settings, fingerprint["path"])).folder
        manifest = self._open_work(work, fingerprint, settings, tokenizer, chunk_rows, restart)
        try:
            return self._run(work, final, manifest)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise ForgeError(
                    f"The disk is full (or a file-size limit was hit) while writing {exc.filename or work}.",
                    fix="Free some space and run the same command again: finished chunks are kept and the run "
                    "resumes; no final output was written.",
                    code=ErrorCode.DISK_FULL,
                    data={"path": str(exc.filename or work), "cause": cause(exc)},
                ) from None
            raise

    def _open_work(
        self, work: Path, fingerprint: dict, settings: str, tokenizer_id: str, chunk_rows: int | None, restart: bool
    ) -> Manifest:
        existing = Manifest.load(work)
        if existing is not None and not restart:
            if existing.input["sha256"] != fingerprint["sha256"]:
                raise ForgeError(
                    f"{self.input_path.name} changed since the interrupted preparation in {work.name} "
                    f"({existing.input['bytes']:,} bytes then, {fingerprint['bytes']:,} now; content differs), "
                    "so it cannot be resumed.",
                    fix="Run `forge prepare FILE --restart` to start over with the current file.",
                    code=ErrorCode.DATA_INPUT_CHANGED,
                )
            self.hooks.step(f"Resuming: {len(existing.chunks)} chunks already done")
            return existing
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        manifest = Manifest(
            fingerprint,
            settings,
            tokenizer_id,
            chunk_rows or default_chunk_rows(),
            "mixture" if self.mixture else self.config.data.format,
            max_length=self.config.model.max_length,
            chat_template=template_record(self.setup.chat_format, self.setup.template_name),
        )
        manifest.save(work)
        return manifest

    def _items(self, batch_rows: int) -> tuple[Iterator[Record | BadRow], int | None]:
        """The input's items in order, and an estimate of their number (for the progress bar's ETA)."""
        from forgellm.data.read.readers import estimate_rows, open_dataset

        if self.mixture is not None:
            self.reading = self.mixture.reading
            return self.mixture.items(batch_rows, self.hooks.step)
        dataset = open_dataset(self.input_path, batch_rows=batch_rows)
        self.reading = dataset.reading
        items = itertools.chain.from_iterable(dataset.batches())
        if self.config.data.format == "thread":
            from forgellm.data.read.threads import link_threads

            # Threads are linked over the whole file first; the items are then conversations and the rows
            # that could not be placed, in an order fixed by the file (so a resume skips the same ones).
            self.hooks.step(f"Linking the reply threads of {self.input_path.name}")
            linked = link_threads(items, self.config.data.recipe)
            return linked, linked.count
        return items, estimate_rows(dataset)

    def _verify_chunks(self, work: Path, manifest: Manifest) -> int:
        """Check every finished chunk's files against the size and checksum recorded when it was written.
        From the first damaged one on, chunks are dropped from the manifest and prepared again (each chunk
        builds on the split and duplicate state of those before it); returns how many are redone."""
        for number, chunk in enumerate(manifest.chunks):
            reason = chunk_damage(work, number, chunk.get("files"))
            if reason is None:
                continue
            redone = len(manifest.chunks) - number
            after = f" and the {redone - 1} after it" if redone > 1 else ""
            self.hooks.step(
                f"Warning: finished chunk {number + 1} cannot be trusted ({reason}); preparing it{after} again"
            )
            manifest.chunks = manifest.chunks[:number]
            manifest.save(work)
            return redone
        return 0

    def _run(self, work: Path, final: Path, manifest: Manifest) -> PrepareResult:
        self.redone = self._verify_chunks(work, manifest)
        done = self.resumed = len(manifest.chunks)
        index = KeyIndex(work / "keys.sqlite")
        index.forget_from(done)  # keys of a chunk that was cut off by a crash
        assigner = SplitAssigner(self.config.preprocessing.split, self.config.preprocessing.seed)
        if manifest.chunks:
            assigner.restore(manifest.chunks[-1]["split_state"])
        near = self._near_index(work, done)
        processor = ChunkProcessor(
            self.config,
            manifest.format,
            self.setup.chat_format,
            self.setup.tokenizer,
            index,
            assigner,
            self.timer,
            near,
            self.mixture,
        )
        items, total = self._items(min(manifest.chunk_rows, 5000))
        rows_done = sum(c["items"] for c in manifest.chunks)
        for _ in itertools.islice(items, rows_done):  # finished chunks: read past them
            pass
        self.hooks.step(f"Preparing in chunks of {manifest.chunk_rows:,} rows")
        number = done
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forge-tokenize")
        waiting: tuple[int, Future, int] | None = None  # (chunk number, tokenization, items) in flight
        try:
            while True:
                read_started = time.perf_counter()
                chunk = list(itertools.islice(items, manifest.chunk_rows))
                started = pool.submit(processor.tokenize, processor.begin(chunk, read_started)) if chunk else None
                if waiting is not None:
                    rows_done += self._complete(work, manifest, processor, assigner, waiting)
                    self.hooks.rows(rows_done, max(total or 0, rows_done) or None)
                if started is None:
                    break
                waiting = (number, started, len(chunk))
                number += 1
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            index.close()
        return self._finish(work, final, manifest)

    def _complete(
        self,
        work: Path,
        manifest: Manifest,
        processor: ChunkProcessor,
        assigner: SplitAssigner,
        waiting: tuple[int, Future, int],
    ) -> int:
        """Finish a tokenized chunk in order, write it, record it; returns its number of items."""
        number, tokenized, items = waiting
        out = processor.finish(number, tokenized.result())
        start = time.perf_counter()
        files = write_chunk(work, number, out.rows, out.tokens, out.rejects)
        manifest.chunks.append({**chunk_summary(number, items, out, assigner), "files": files})
        manifest.save(work)
        self.timer.add("write", start)
        self._check_error_rate(manifest, work)
        return items

    def _near_index(self, work: Path, done: int) -> NearDuplicateIndex | None:
        """The near-duplicate index, rebuilt from finished chunks when resuming."""
        filters = self.config.preprocessing.filters
        if not filters.drop_near_duplicates:
            return None
        near = NearDuplicateIndex(filters.near_duplicate_threshold)
        for number in range(done):
            with open(chunk_paths(work, number)["rows"], encoding="utf-8") as handle:
                near.add_rows(orjson.loads(line) for line in handle)
        return near

    def _check_error_rate(self, manifest: Manifest, work: Path, final_check: bool = False) -> None:
        items = sum(c["items"] for c in manifest.chunks)
        errors = sum(c["format_errors"] for c in manifest.chunks)
        limit = self.config.preprocessing.max_error_rate
        if (items >= _MIN_ROWS_FOR_ERROR_RATE or final_check) and items and errors / items > limit:
            reasons = Counter()
            for chunk in manifest.chunks:
                reasons.update(chunk["reasons"])
            top = ", ".join(f"{reason} ({count})" for reason, count in reasons.most_common(3))
            raise ForgeError(
                f"{errors:,} of {items:,} rows ({errors / items:.0%}) could not be read or do not fit the recipe "
                f"— more than preprocessing.max_error_rate ({limit:.0%}). Most common: {top}. No output was "
                "written.",
                fix=f"Look at the rejected rows with their line numbers in {work / 'chunks'} (*.rejects.jsonl); "
                "fix the data or data.recipe in forge.yaml (`forge prepare FILE --show-recipe`), then run again "
                "with --restart.",
                code=ErrorCode.DATA_ROWS_REJECTED,
                data=rejects_data(manifest, reasons),
            )

    def _finish(self, work: Path, final: Path, manifest: Manifest) -> PrepareResult:
        self._check_error_rate(manifest, work, final_check=True)
        self.hooks.step("Writing train/val/test files")
        start = time.perf_counter()
        self.plan = MixturePlan(self.mixture.shares(), self.mixture.seed) if self.mixture else None
        split_stats, merge_reasons = merge_chunks(work, len(manifest.chunks), self.config, self.plan)
        self.timer.add("write", start)
        if split_stats["train"]["examples"] == 0:
            raise nothing_left(manifest, merge_reasons, work)
        release_memory()  # hand the merge's buffers back before validation allocates its own
        self.hooks.step("Validating the output")
        start = time.perf_counter()
        checks = validate_outputs(
            work,
            cpt=self.config.training.stage == "cpt",
            max_length=self.config.model.max_length,
            chat_format=self.setup.chat_format,
            tokenizer=self.setup.tokenizer,
        )
        self.timer.add("validate", start)
        failed = [c for c in checks if not c.ok]
        if failed:
            raise ForgeError(
                "The prepared data failed its own checks, so it was not published:",
                details=[f"{c.name}: {c.detail}" for c in failed],
                fix=f"This is a Forge bug; please report it with the files in {work}.",
                code=ErrorCode.DATA_CHECKS_FAILED,
            )
        stats = self._stats(manifest, split_stats, merge_reasons, checks)
        # Token statistics: one rule for study and prepare (data/token_stats.py); here the counts are exact.
        counting = counting_for(self.setup.tokenizer, self.config.model.ref)
        split_files = (work / f"{split}.jsonl" for split in ("train", "val", "test"))
        stats.text = prepared_text_stats(split_files, counting).to_dict()
        stats.save(PreparedLayout(work))
        manifest.complete, manifest.output_fingerprint = True, final.name
        manifest.save(work)
        for leftover in ("keys.sqlite", "keys.sqlite-wal", "keys.sqlite-shm"):
            (work / leftover).unlink(missing_ok=True)
        shutil.rmtree(work / "chunks")
        if final.exists():
            shutil.rmtree(final)
        work.replace(final)
        prepared = PreparedData.load(final)  # the record just published, read by its one reader
        assert prepared is not None, "the published folder holds its manifest"
        return PrepareResult(
            prepared, self.config, [c.to_dict() for c in checks], resumed_chunks=self.resumed, redone_chunks=self.redone
        )

    def _stats(self, manifest: Manifest, split_stats: dict, merge_reasons: Counter, checks: list) -> PreparedStats:
        reasons: Counter = Counter()
        for chunk in manifest.chunks:
            reasons.update(chunk["reasons"])
        reasons.update(merge_reasons)
        seconds = {stage: round(value, 3) for stage, value in self.timer.seconds.items()}
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return PreparedStats(
            input=manifest.input,
            format=manifest.format,
            stage=self.config.training.stage,
            model=self.config.model.ref,
            template=self.setup.template_name,
            template_sha256=(manifest.chat_template or {}).get("sha256"),
            tokenizer=manifest.tokenizer,
            max_length=self.config.model.max_length,
            rows_read=sum(c["items"] for c in manifest.chunks),
            kept=sum(s["examples"] for s in split_stats.values()),
            rejected=sum(reasons.values()),
            rejected_by_reason=dict(reasons.most_common()),
            truncated=sum(c["truncated"] for c in manifest.chunks),
            truncated_lost_stop_token=sum(c["truncated_lost_stop"] for c in manifest.chunks),
            splits={name: SplitCounts(**counts) for name, counts in split_stats.items()},
            chunk_rows=manifest.chunk_rows,
            chunks=len(manifest.chunks),
            seconds_by_stage=seconds,
            bottleneck=max(seconds, key=seconds.get) if seconds else None,
            seconds_total_this_run=round(time.perf_counter() - self.started, 3),
            peak_rss_mb=round(peak_kb / 1024, 1),
            warnings=[*(self.mixture.warnings if self.mixture else []), *self.setup.warnings],
            reading=self.reading() if self.reading is not None else {},
            **mixture_stats(self.mixture, self.plan),
        )
