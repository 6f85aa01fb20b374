"""Before the stages: the request checked, the output folder and registry prepared, and the
sources registered, with those to run now picked out."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import MinerConfig, changed_settings
from ..errors import ConfigError, NotFound, UnsafePath
from ..inputs.listing import Source
from ..observe.status import SECRET_PARAMS_META
from ..records import State
from ..store.files import check_target, is_inside, recover_dir, remove_tree
from ..store.layout import REGISTRY, SQLITE_SIDECARS, OutputLayout
from ..store.registry import NewRow, Registry
from .request import RunRequest


def check_request(request: RunRequest, sources: list[Source]) -> None:
    config = request.config
    open_ended = bool(request.watch) or any(s.kind == "live" for s in sources)
    if not sources and not request.watch:
        raise ConfigError("no inputs: give URLs, paths or a list file (one input per line), or --watch DIR")
    if open_ended and request.engine == "sequential":
        raise ConfigError("live sources and --watch need the stage pipeline: drop --sequential")
    if request.duration_s is not None and request.duration_s <= 0:
        raise ConfigError(f"--duration must be positive, got {request.duration_s}")
    _check_textfile(config)
    if config.export.manifest == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ConfigError("export.manifest: parquet needs pyarrow (pip install pyarrow), or use jsonl") from exc


def _check_textfile(config: MinerConfig) -> None:
    """The textfile is node_exporter's, outside the output folder (a path there could be the
    manifest or the registry), and a regular file (a FIFO would hang the run before it starts)."""
    textfile = config.metrics.textfile
    if textfile is None:
        return
    if is_inside(textfile, config.output_dir) or is_inside(config.output_dir, textfile):
        raise ConfigError(f"--metrics-textfile {textfile} is inside the output folder {config.output_dir}: give a "
                          "file in node_exporter's textfile folder (e.g. /var/lib/node_exporter/textfile/x.prom)")
    try:
        check_target(textfile)
    except UnsafePath as exc:
        raise ConfigError(f"--metrics-textfile: {exc}") from None


def prepare_output(config: MinerConfig, fresh: bool) -> Registry:
    """The caller holds the output lock."""
    layout = OutputLayout(config.output_dir)
    output = layout.output
    layout.check_links()
    if fresh:
        for name in ("work", "dataset", "dataset.staging", "dataset.old"):
            remove_tree(output / name)
        for suffix in ("", *SQLITE_SIDECARS):
            (output / f"{REGISTRY}{suffix}").unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    recover_dir(layout.dataset_dir)
    registry = Registry(layout.registry)
    try:
        check_settings(registry, config, output)
    except ConfigError:
        registry.close()
        raise
    registry.set_meta("config_hash", config.result_hash())
    registry.set_meta(SETTINGS_META, json.dumps(config.result_settings(), sort_keys=True))
    registry.set_meta(EMBEDDINGS_META, "1" if config.embeddings else "0")
    # status masks the same query parameters the run did.
    registry.set_meta(SECRET_PARAMS_META, json.dumps(config.secret_params))
    # A run killed while reading live sources: what it committed is final, what it had not is gone.
    registry.end_live()
    remove_tree(layout.live_dir)
    return registry


#: Registry meta: the settings the folder was mined with (what a refusal names), and whether its
#: frames carry the detector's embeddings (the semantic pass and the budget compare them).
SETTINGS_META, EMBEDDINGS_META = "settings", "embeddings"


def check_settings(registry: Registry, config: MinerConfig, output: Path) -> None:
    """Refuse a folder mined with settings that change what the stages recorded, naming them."""
    previous = registry.get_meta("config_hash")
    if previous is not None and previous != config.result_hash() and registry.videos():
        stored = registry.get_meta(SETTINGS_META)
        try:
            before = json.loads(stored) if stored else None
        except ValueError:
            before = None
        changed = changed_settings(before, config.result_settings()) if isinstance(before, dict) else []
        what = ("; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")) if changed \
            else "the model, classes, sampling or thresholds, or the release's rules"
        raise ConfigError(f"{output} was mined with other settings ({what}); run with --fresh to start over, or give "
                          "a new --output (dedup, the semantic pass, per_shot and the budget change without --fresh)")
    if config.embeddings and registry.get_meta(EMBEDDINGS_META) == "0" and registry.videos():
        raise ConfigError(f"{output} was mined without the detector's embeddings, which dedup.semantic and "
                          "select.budget compare: run with --fresh to mine them, or set dedup.semantic: false and no "
                          "select.budget")


def select_sources(sources: list[Source], registry: Registry, config: MinerConfig, retry_failed: bool
                   ) -> tuple[list[Source], int]:
    """Register every source; return those to run now and how many are skipped as done. Inputs that
    cannot run (a malformed URL, a local file that is not there) fail here, all in one go: a list
    of 20,000 dead links costs seconds, not a trip through the pipeline each."""
    config_hash = config.result_hash()
    rows = registry.register([NewRow(s.video_id, s.raw, s.normalized, s.kind, s.order, config_hash=config_hash)
                              for s in sources])
    to_run, failed, skipped = [], [], 0
    for src in sources:
        state = rows[src.video_id].state
        if src.kind == "invalid":
            failed.append((src.video_id, src.error_kind or "error", src.error or "invalid input"))
        elif src.kind == "live":  # a stream is read again on every run: its new frames append
            to_run.append(src)
        elif state is State.DONE:
            skipped += 1
        elif (state is State.FAILED and not retry_failed) or (retry_failed and state is not State.FAILED):
            continue
        elif src.kind == "local" and not Path(src.normalized).is_file():
            failed.append((src.video_id, NotFound.kind, f"{src.normalized} does not exist or is not a file "
                                                        f"({NotFound.hint})"))
        else:
            if state is State.FAILED:
                registry.reset(src.video_id)
            to_run.append(src)
    registry.fail_many(failed)
    return to_run, skipped
