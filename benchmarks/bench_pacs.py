"""Series per second retrieved from a real Orthanc by C-GET, C-MOVE and WADO-RS, and from
the warm on-disk cache, measured in one run.

    python benchmarks/bench_pacs.py [--series 20] [--slices 12] [--size 256] [--rounds 3]
                                    [--plot docs/figures/pacs_bench.png]

Starts its own Orthanc (apt packages orthanc + orthanc-dicomweb) on free 127.0.0.1
ports in a temporary directory, loads ``--series`` LGE-like MR series by C-STORE, then
for each method retrieves every series into an empty cache (``--rounds`` times, median)
and finally reads them all again from the warm cache.  Prints series/s, MB/s and the
ratio of the warm cache to each network method.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.pacs.base import SeriesRef  # noqa: E402
from connectors.pacs.factory import NetworkSourceParams, make_peer, open_network_source  # noqa: E402
from connectors.pacs.store import send_files  # noqa: E402
from tests.pacs.dicom_data import write_series  # noqa: E402
from tests.pacs.orthanc_server import OrthancServer, free_port  # noqa: E402

OUR_AET = "MPRTM"


def _params(server: OrthancServer, cache: Path, kind: str, retrieve: str, scp_port: int):  # type: ignore[no-untyped-def]
    return NetworkSourceParams(
        kind=kind,  # type: ignore[arg-type]
        cache_dir=str(cache),
        port=server.dicom_port,
        called_aet=server.aet,
        calling_aet=OUR_AET,
        retrieve=retrieve,  # type: ignore[arg-type]
        storage_port=scp_port,
        allowed_peers=(server.aet,),
        max_retries=3,
        retry_backoff_s=0.05,
        dicomweb_url=server.dicomweb_url,
        dicomweb_auth="basic",
        dicomweb_username=server.username,
        dicomweb_password=server.password,
    )


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=20, help="series (one per patient)")
    ap.add_argument("--slices", type=int, default=12, help="slices per series")
    ap.add_argument("--size", type=int, default=256, help="rows = columns of each slice")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions per method (median)")
    ap.add_argument("--plot", type=Path, default=None, help="write a bar chart (PNG) here")
    ap.add_argument(
        "--nagle",
        action="store_true",
        help="leave Nagle's algorithm on in Orthanc (its default; TCP_NODELAY unset)",
    )
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp_name:
        tmp = Path(tmp_name)
        scp_port = free_port()
        server = OrthancServer(
            tmp / "orthanc",
            modalities={OUR_AET: ("127.0.0.1", scp_port)},
            tcp_nodelay=not args.nagle,
        )
        server.start()
        try:
            return _run(args, tmp, server, scp_port)
        finally:
            server.stop()


def _run(args: argparse.Namespace, tmp: Path, server: OrthancServer, scp_port: int) -> int:
    files: list[Path] = []
    for k in range(args.series):
        w = write_series(
            tmp / "dicom",
            patient_id=f"BENCH{k:04d}",
            study_uid=f"1.2.826.0.1.3680043.8.498.77.{k + 1}",
            description="LGE PSIR SAX",
            protocol="LGE_PSIR_SAX",
            n_slices=args.slices,
            series_number=1,
            seed=k,
            size=args.size,
        )
        files += list(w.files)
    mb = sum(f.stat().st_size for f in files) / 1e6
    peer = make_peer(_params(server, tmp, "dimse", "get", scp_port))
    t_store = _timed(lambda: send_files(files, peer))
    print(f"Orthanc TCP_NODELAY={'0 (Nagle on)' if args.nagle else '1 (Nagle off)'}")
    print(
        f"loaded {len(files)} instances ({mb:.1f} MB, {args.series} series of {args.slices} "
        f"x {args.size}x{args.size}) by C-STORE in {t_store:.2f} s: "
        f"{len(files) / t_store:.1f} instances/s"
    )

    lookup = open_network_source(_params(server, tmp / "lookup", "dimse", "get", scp_port))
    refs: list[SeriesRef] = []
    t_find = _timed(
        lambda: refs.extend(
            r for k in range(args.series) for r in lookup.find_series(f"BENCH{k:04d}")
        )
    )
    lookup.close()
    print(f"C-FIND (study + series level): {args.series / t_find:.1f} patients/s")

    methods = {
        "C-GET": ("dimse", "get"),
        "C-MOVE": ("dimse", "move"),
        "WADO-RS": ("dicomweb", "get"),
    }
    rates: dict[str, float] = {}
    warm_dir = None
    for name, (kind, retrieve) in methods.items():
        times = []
        for r in range(args.rounds):
            cache = tmp / f"cache-{kind}-{retrieve}-{r}"
            source = open_network_source(_params(server, cache, kind, retrieve, scp_port))
            try:
                times.append(_timed(lambda s=source: [s.retrieve_series(ref) for ref in refs]))
            finally:
                source.close()
            warm_dir = cache
        rates[name] = args.series / statistics.median(times)
    assert warm_dir is not None
    warm = open_network_source(_params(server, warm_dir, "dimse", "get", free_port()))
    warm_times = [
        _timed(lambda: [warm.retrieve_series(ref) for ref in refs]) for _ in range(args.rounds)
    ]
    warm.close()
    rates["warm cache"] = args.series / statistics.median(warm_times)

    print(f"\n{'method':<12}{'series/s':>10}{'MB/s':>9}{'cache x':>10}")
    for name, rate in rates.items():
        ratio = rates["warm cache"] / rate
        print(f"{name:<12}{rate:>10.2f}{rate * mb / args.series:>9.1f}{ratio:>10.1f}")
    print("('cache x' = warm-cache series/s divided by the method's series/s)")
    if args.plot:
        _plot(rates, args, args.plot)
    return 0


def _plot(rates: dict[str, float], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(rates)
    bars = ax.bar(
        names, [rates[n] for n in names], color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"]
    )
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("series / s")
    ax.set_ylim(0, max(rates.values()) * 1.15)
    ax.set_title(
        f"Orthanc 1.10 on 127.0.0.1: {args.series} series x {args.slices} slices "
        f"{args.size}x{args.size}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
