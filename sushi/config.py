"""AccelConfig: every hardware parameter in one place, its derived values, presets and JSON I/O."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import isa

__all__ = ["AccelConfig", "PRESETS", "load_config", "ConfigError", "VECTOR_OPS"]


class ConfigError(ValueError):
    """An accelerator configuration that makes no sense."""


#: the optional vector-unit operations: AccelConfig field -> what it executes
VECTOR_OPS = {"op_maxpool": "POOL mode 0 (max)", "op_avgpool": "POOL mode 1 (average)",
              "op_add": "ADD", "op_mul": "MUL", "op_lut": "LUT"}


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class AccelConfig:
    """Parameters of one SushiAccel instance.

    pe_rows (R): output channels computed in parallel; pe_cols (V): input channels reduced in
    parallel.  V is also the byte width of the DRAM port and of an activation-buffer word, so one
    activation word is V channels of one pixel.  A weight tile is R x V int8 = one kernel position,
    V input channels, R output channels.
    """
    name: str = "custom"
    pe_rows: int = 8
    pe_cols: int = 8
    act_buf_words: int = 4096      # activation buffer depth in V-byte words
    wbuf_tiles: int = 256          # tiles per half of the double-buffered weight buffer
    pb_tiles: int = 0              # Persistent Buffer capacity in tiles (SubGraph Stationary)
    #: entries of the residency table: one per SuperNet layer box a SubGraph keeps in the PB
    #: (SETRES / PBKEY key, docs/isa.md)
    res_entries: int = 64
    clock_mhz: float = 100.0
    #: width of the DRAM byte addresses the hardware computes (CSR bases, DMA, instruction fetch,
    #: weight/record/LUT addresses) and, from it, of the tile ids; programs must keep their DRAM
    #: image below 2**dram_addr_bits (a board's memory: iCEBreaker 128 KiB -> 17)
    dram_addr_bits: int = 32
    #: the performance counters besides CYCLES (W_RD_BYTES .. MAC_CYCLES); without them those
    #: CSRs read 0 (area on small FPGAs)
    perf_counters: bool = True
    #: vector-unit operations built into the hardware (VECTOR_OPS; small FPGAs leave some out):
    #: an instruction that needs a missing one stops the program with error 2 (unsupported
    #: instruction) and the compiler rejects such programs (compiler/features.py)
    op_maxpool: bool = True
    op_avgpool: bool = True
    op_add: bool = True
    op_mul: bool = True
    op_lut: bool = True
    #: pipeline registers for clock targets of ~100 MHz on ECP5-class FPGAs: the PE array in 5
    #: stages instead of 2 (block RAM outputs registered, partial sums), the post-processor in 7
    #: instead of 3, a second instruction-check cycle, a pool read register.  Changes cycle
    #: counts (the performance model follows it); false on small FPGAs, where every flip-flop
    #: costs a logic cell
    deep_pipeline: bool = True

    def __post_init__(self):
        def pos(name):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"'{name}' must be a positive integer, not {v!r}")
        for n in ("pe_rows", "pe_cols", "act_buf_words", "wbuf_tiles", "res_entries"):
            pos(n)
        if not isinstance(self.pb_tiles, int) or self.pb_tiles < 0:
            raise ConfigError(f"'pb_tiles' must be a non-negative integer, not {self.pb_tiles!r}")
        if not _pow2(self.pe_cols) or self.pe_cols < 2 or self.pe_cols > 64:
            raise ConfigError(f"'pe_cols' must be a power of two in 2..64, not {self.pe_cols}")
        if self.pe_rows % self.pe_cols:
            raise ConfigError(f"'pe_rows' ({self.pe_rows}) must be a multiple of 'pe_cols' ({self.pe_cols})")
        if self.pe_rows > 64:
            raise ConfigError(f"'pe_rows' must be at most 64, not {self.pe_rows}")
        if self.res_entries > 256:
            raise ConfigError(f"'res_entries' must be at most 256 (SETRES.key is 8 bits), not {self.res_entries}")
        if self.pb_tiles >= 1 << 24:
            raise ConfigError(f"'pb_tiles' must be below 2**24 (24-bit PB slots), not {self.pb_tiles}")
        if self.act_buf_words > 1 << 16:
            raise ConfigError(f"'act_buf_words' must be at most 65536 (16-bit buffer addresses), not {self.act_buf_words}")
        if (not isinstance(self.dram_addr_bits, int) or isinstance(self.dram_addr_bits, bool)
                or not 12 <= self.dram_addr_bits <= 32):
            raise ConfigError(f"'dram_addr_bits' must be an integer in 12..32, not {self.dram_addr_bits!r}")
        if not isinstance(self.perf_counters, bool):
            raise ConfigError(f"'perf_counters' must be true or false, not {self.perf_counters!r}")
        if not isinstance(self.deep_pipeline, bool):
            raise ConfigError(f"'deep_pipeline' must be true or false, not {self.deep_pipeline!r}")
        for n in VECTOR_OPS:
            if not isinstance(getattr(self, n), bool):
                raise ConfigError(f"'{n}' must be true or false, not {getattr(self, n)!r}")
        if not isinstance(self.clock_mhz, (int, float)) or self.clock_mhz <= 0:
            raise ConfigError(f"'clock_mhz' must be a positive number, not {self.clock_mhz!r}")

    # ---- derived values (the one place they are computed) ----
    @property
    def n_pes(self) -> int:
        return self.pe_rows * self.pe_cols

    @property
    def dram_bytes(self) -> int:
        """DRAM port width in bytes (one beat)."""
        return self.pe_cols

    @property
    def tile_bytes(self) -> int:
        return self.pe_rows * self.pe_cols

    @property
    def act_buf_bytes(self) -> int:
        return self.act_buf_words * self.pe_cols

    @property
    def wbuf_bytes(self) -> int:
        return 2 * self.wbuf_tiles * self.tile_bytes

    @property
    def pb_bytes(self) -> int:
        return self.pb_tiles * self.tile_bytes

    @property
    def tile_id_bits(self) -> int:
        """Width of the tile ids the weight fetcher computes: 24 (the ISA's) or fewer when every
        tile of a 2**dram_addr_bits DRAM has a smaller id."""
        return max(1, min(24, self.dram_addr_bits - (self.tile_bytes.bit_length() - 1)))

    def derived(self) -> dict:
        return {
            "n_pes": self.n_pes, "dram_bytes": self.dram_bytes, "tile_bytes": self.tile_bytes,
            "act_buf_bytes": self.act_buf_bytes, "wbuf_bytes": self.wbuf_bytes,
            "pb_bytes": self.pb_bytes, "instr_bytes": isa.INSTR_BYTES, "param_bytes": isa.PARAM_BYTES,
            "isa_version": isa.ISA_VERSION,
        }

    def to_json(self) -> dict:
        return {**asdict(self), "derived": self.derived()}

    @classmethod
    def from_json(cls, d: dict, source: str = "config") -> "AccelConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - {"derived"}
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, AccelConfig] = {
    "tiny": AccelConfig(name="tiny", pe_rows=4, pe_cols=4, act_buf_words=2048, wbuf_tiles=128,
                        pb_tiles=0, clock_mhz=30.0, deep_pipeline=False),
    "8x8": AccelConfig(name="8x8", pe_rows=8, pe_cols=8, act_buf_words=4096, wbuf_tiles=256,
                       pb_tiles=0, clock_mhz=100.0),
    "16x8": AccelConfig(name="16x8", pe_rows=16, pe_cols=8, act_buf_words=8192, wbuf_tiles=256,
                        pb_tiles=0, clock_mhz=100.0),
    # with a Persistent Buffer (SubGraph Stationary: LOADSG, tile residency)
    "8x8-pb": AccelConfig(name="8x8-pb", pe_rows=8, pe_cols=8, act_buf_words=4096, wbuf_tiles=256,
                          pb_tiles=512, res_entries=64, clock_mhz=100.0),
    "tiny-pb": AccelConfig(name="tiny-pb", pe_rows=4, pe_cols=4, act_buf_words=2048, wbuf_tiles=128,
                           pb_tiles=64, clock_mhz=30.0),
    # board presets (docs/boards.md): ULX3S-85F (ECP5) and iCEBreaker (iCE40UP5K, smallest array)
    "ulx3s": AccelConfig(name="ulx3s", pe_rows=8, pe_cols=8, act_buf_words=4096, wbuf_tiles=256,
                         pb_tiles=256, res_entries=64, clock_mhz=100.0),
    # iCE40UP5K: the smallest array, no Persistent Buffer, max-pool as its only vector operation
    # (docs/boards.md: with average pooling too it needs ~240 LCs more than the chip has)
    "icebreaker": AccelConfig(name="icebreaker", pe_rows=2, pe_cols=2, act_buf_words=2048,
                              wbuf_tiles=64, pb_tiles=0, res_entries=2, clock_mhz=30.0,
                              dram_addr_bits=17, perf_counters=False, op_avgpool=False,
                              op_add=False, op_mul=False, op_lut=False, deep_pipeline=False),
}


def load_config(spec: "str | Path | AccelConfig | None") -> AccelConfig:
    """A preset name, a JSON file path, or an AccelConfig."""
    if spec is None:
        return PRESETS["8x8"]
    if isinstance(spec, AccelConfig):
        return spec
    s = str(spec)
    if s in PRESETS:
        return PRESETS[s]
    p = Path(s)
    if p.suffix == ".json" or p.exists():
        if not p.exists():
            raise ConfigError(f"config file {s} does not exist")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{s}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if isinstance(d, dict) and "pe_rows" not in d and "accel" in d:
            d = d["accel"]
        return AccelConfig.from_json(d, source=s)
    raise ConfigError(f"unknown preset {s!r}; presets: {', '.join(PRESETS)}; or give a .json file")
