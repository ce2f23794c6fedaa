"""Groups and profiles under load (``bench/profiles``): what one index walk per name costs.

The question (docs/profiles.md, "How fast"): with the 1M list plus every
category list of ``../shared/data/categories`` loaded (about a million more
names, opt-in) and clients in four groups, how close does filterd stay to
the same run without groups, and what do the category lists cost in memory
and compile time? Three scenarios, each a fresh ``filterd run`` on the
server CPU against the same NSD upstream and the same traffic:

- ``1m``: the 1M list alone (what ``bench/run`` measures);
- ``1m+categories``: plus every category list, opt-in, no groups (every
  client in the default group, which applies none of them);
- ``1m+categories, 4 groups``: the same lists, clients 127.0.0.2-.5 in the
  groups school-primary, school-secondary, family and default;
- ``..., no safe search``: the same with those profiles' categories and
  schedules but no safe search (a search engine's name is then a cache hit
  like any other, not a rewrite).

Traffic is identical in all of them: four dnsperf processes, one per source
address (``-a 127.0.0.x``), on the load CPU, each sending the hit-heavy
query file closed-loop; first the warm file once from every source (each
group's verdict memo fills as the cache does). Reported: the sum of the four
dnsperf rates, the server's CPU and its core's busy/steal shares (a shared
machine shows up there), RSS and PSS of the process tree once warm, the
compile time filterd reports, and the answers' NXDOMAIN share (the
categories block more for the child profiles). ``--opcodes N`` counts
instead the Python bytecodes a query runs in each configuration (in this
process, no sockets), a figure a busy machine does not disturb.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from bench import runs
from bench.measure import Load, cpu_times, parse_rcodes, parse_summary, tree_cpu_seconds
from bench.targets import LOOPBACK, REPO, Nsd, Proc, die_with_parent, free_port, spawn, tree_memory

SERVER_CPU: Final = 0
LOAD_CPU: Final = 1
SOURCES: Final = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
CATEGORIES: Final = REPO.parent / "shared" / "data" / "categories"
NOT_A_LIST: Final = {"ut1/global_usage.txt"}
CATEGORY_OF: Final = {
    "ut1/agressif": "violence", "ut1/arjel": "gambling", "ut1/gambling": "gambling",
    "ut1/dangerous_material": "weapons", "ut1/drogue": "drugs", "ut1/mixed_adult": "adult",
    "ut1/lingerie": "adult", "ut1/dating": "dating", "ut1/games": "games",
    "ut1/social_networks": "social", "ut1/chat": "chat", "ut1/redirector": "proxy",
    "ut1/vpn": "proxy", "ut1/residential-proxies": "proxy", "ut1/doh": "doh",
    "ut1/cryptojacking": "malware", "ut1/warez": "piracy", "ut1/tricheur": "cheating",
    "ut1/tricheur_pix": "cheating", "ut1/audio-video": "streaming", "ut1/shopping": "shopping",
    "hostsVN/adult": "adult", "hostsVN/adult-filter": "adult",
    "hostsVN/gambling-domain": "gambling", "hostsVN/gambling-filter": "gambling",
    "shadowwhisperer/Adult": "adult",
    "shadowwhisperer/Dating": "dating", "shadowwhisperer/Gambling": "gambling",
    "shadowwhisperer/Scam": "scam", "blocklistproject/crypto": "malware",
    "blocklistproject/drugs-ags": "drugs", "blocklistproject/drugs-nl": "drugs",
    "blocklistproject/drugs": "drugs", "blocklistproject/gambling_2024-08-19": "gambling",
    "blocklistproject/piracy": "piracy", "blocklistproject/torrent": "piracy",
    "blocklistproject/ransomware": "malware", "blocklistproject/scam": "scam",
    "blocklistproject/vaping": "drugs",
}  # fmt: skip
"""Category of each list file (by folder/stem); other UT1 files keep their own name."""
GROUPS: Final = """
groups:
  primary: {networks: ["127.0.0.2/32"], profile: school-primary}
  secondary: {networks: ["127.0.0.3/32"], profile: school-secondary}
  family: {networks: ["127.0.0.4/32"], profile: family}
"""


WITHOUT_SAFE_SEARCH: Final = """
groups:
  primary: {networks: ["127.0.0.2/32"], profile: primary}
  secondary: {networks: ["127.0.0.3/32"], profile: secondary}
  family: {networks: ["127.0.0.4/32"], profile: home}
profiles:
  primary:
    categories: [adult, gambling, violence, drugs, weapons, dating, proxy, doh, scam, phishing,
                 malware, piracy, games, social, chat, cheating]
  secondary:
    categories: [adult, gambling, violence, drugs, weapons, dating, proxy, doh, scam, phishing,
                 malware, piracy, cheating]
    scheduled: {games: school-hours, social: school-hours}
  home:
    categories: [adult, gambling, violence, drugs, weapons, dating, proxy, doh, scam, phishing,
                 malware, piracy]
    scheduled: {games: [school-hours, night], social: night}
"""
"""The built-in child profiles without safe search: the cost of groups and
masks alone, apart from that of rewriting search engines."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    categories: bool
    groups: str


SCENARIOS: Final = (
    Scenario("1m", False, ""),
    Scenario("1m+categories", True, ""),
    Scenario("1m+categories, 4 groups", True, GROUPS),
    Scenario("1m+categories, 4 groups, no safe search", True, WITHOUT_SAFE_SEARCH),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    scenario: str
    names: int
    compile_s: float
    check_s: float
    rss_mib: float
    pss_mib: float
    qps: float
    server_cpu: float
    core_busy: float
    core_steal: float
    nxdomain_share: float
    lost: int
    load_before: str
    load_after: str


def category_lists() -> list[tuple[str, Path, str]]:
    """(list name, path, category) for every category file in the data set."""
    out = []
    for path in sorted(CATEGORIES.glob("*/*")):
        key = f"{path.parent.name}/{path.name}"
        if key in NOT_A_LIST:
            continue
        stem = f"{path.parent.name}/{path.name.rsplit('.', 1)[0]}"
        category = CATEGORY_OF.get(stem) or "ut1-" + path.name.rsplit(".", 1)[0].replace("_", "-")
        name = re.sub(r"[^a-z0-9-]", "-", stem.lower())
        out.append((name, path, category))
    return out


def config_text(scenario: Scenario, port: int, upstream: int, admin: int, state: Path) -> str:
    ds = runs.dataset()
    lists = [
        f'  - {{name: bench, path: "{ds.sizes[1_000_000].domains_path}", format: domains, '
        "mandatory: true}"
    ]
    if scenario.categories:
        lists += [
            f'  - {{name: {name}, path: "{path}", category: {category}, opt_in: true, '
            "max_invalid: 1}"
            for name, path, category in category_lists()
        ]
    return (
        f'server: {{listen: ["{LOOPBACK}:{port}"], workers: 1}}\n'
        f'access: {{allow: ["127.0.0.0/8"]}}\n'
        f'upstream: {{servers: ["{LOOPBACK}:{upstream}"]}}\n'
        "cache: {max_entries: 1000000}\n"
        "rate_limit: {responses_per_second: 0}\n"
        "lists:\n" + "\n".join(lists) + "\n" + scenario.groups
        + f'admin: {{listen: "{LOOPBACK}:{admin}"}}\n'
        f'state_dir: "{state}"\n'
    )  # fmt: skip


def _metric(admin: int, name: str) -> float:
    import urllib.request  # noqa: PLC0415 - only here

    with urllib.request.urlopen(f"http://{LOOPBACK}:{admin}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def _ready(admin: int) -> bool:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{admin}/readyz", timeout=0.5) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def dnsperf_all(port: int, datafile: Path, load: Load, seconds: float, work: Path, tag: str,
                passes: int | None = None) -> list[str]:  # fmt: skip
    """Four dnsperf processes at once, one per source address; their outputs."""
    procs = []
    for source in SOURCES:
        cmd = [
            "taskset", "-c", str(LOAD_CPU), "dnsperf", "-s", LOOPBACK, "-a", source,
            "-p", str(port), "-d", str(datafile), "-c", str(load.clients),
            "-q", str(load.outstanding), "-t", f"{load.timeout_s:g}", "-l", f"{seconds:g}",
        ]  # fmt: skip
        if passes is not None:
            cmd += ["-n", str(passes)]
        out = (work / f"{tag}-{source}.out").open("wb")
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the harness runs no threads
        )
        procs.append((proc, out))
    texts = []
    for proc, out in procs:
        try:
            proc.wait(seconds + load.timeout_s + 120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
        texts.append(Path(out.name).read_text(errors="replace"))
    return texts


def run_scenario(scenario: Scenario, seconds: float, nsd_port: int, work: Path) -> Outcome:
    ds = runs.dataset()
    size = ds.sizes[1_000_000]
    work.mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), free_port()
    conf = work / "filterd.yaml"
    conf.write_text(config_text(scenario, port, nsd_port, admin, work / "state"))
    binary = REPO / ".venv" / "bin" / "filterd"
    # The whole compile in the foreground (check-config parses and compiles
    # every list into a scratch directory); the daemon's own compile runs at
    # idle priority, so on a busy machine it measures the machine.
    started = time.monotonic()
    subprocess.run(
        ["taskset", "-c", str(SERVER_CPU), str(binary), "check-config", "-c", str(conf)],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    check_s = time.monotonic() - started
    server: Proc = spawn("filterd", [str(binary), "run", "-c", str(conf)], SERVER_CPU,
                         work / "filterd.log", work)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not _ready(admin):
            if time.monotonic() > deadline or not server.alive():
                raise RuntimeError(f"filterd not ready:\n{server.log_tail()}")
            time.sleep(0.2)
        names = int(_metric(admin, "filterd_index_names"))
        compile_s = _metric(admin, "filterd_index_compile_seconds")
        dnsperf_all(port, size.warm_path, Load(2, 200), 300, work, "warm", passes=1)
        memory = tree_memory(server.pid)
        load_before = f"{os.getloadavg()[0]:.2f}"
        stat0, cpu0 = cpu_times(), tree_cpu_seconds(server.pid)
        started = time.monotonic()
        texts = dnsperf_all(port, size.hit_path, Load(2, 100), seconds, work, "hit")
        wall = time.monotonic() - started
        cpu1, stat1 = tree_cpu_seconds(server.pid), cpu_times()
        total0, idle0, steal0 = stat0[SERVER_CPU]
        total1, idle1, steal1 = stat1[SERVER_CPU]
        span = max(total1 - total0, 1)
        summaries = [parse_summary(text) for text in texts]
        rcodes: dict[str, int] = {}
        for text in texts:
            for code, count in parse_rcodes(text).items():
                rcodes[code] = rcodes.get(code, 0) + count
        answered = max(sum(rcodes.values()), 1)
        return Outcome(
            scenario.name,
            names,
            compile_s,
            check_s,
            memory.rss_mib,
            memory.pss_mib,
            sum(s["qps"] for s in summaries),
            (cpu1 - cpu0) / wall,
            1 - (idle1 - idle0) / span,
            (steal1 - steal0) / span,
            rcodes.get("NXDOMAIN", 0) / answered,
            int(sum(s["lost"] for s in summaries)),
            load_before,
            f"{os.getloadavg()[0]:.2f}",
        )
    finally:
        server.stop()


def count_opcodes(queries: int) -> list[tuple[str, float]]:
    """Python bytecodes per query through ``Pipeline.handle`` for each
    scenario but the first, in this process: the first ``queries`` of the
    1M hit-heavy file, sources cycling over ``SOURCES``, every answer
    already cached (``bench.micro.opcodes``). A count, not a time: the same
    on a busy machine as on a quiet one."""
    import asyncio  # noqa: PLC0415 - only for this mode

    from bench.micro import Clock, _answer_for, _queries, opcodes  # noqa: PLC0415
    from filterd.config.load import parse_config  # noqa: PLC0415
    from filterd.lists.compile import compile_lists  # noqa: PLC0415
    from filterd.lists.sources import open_matcher  # noqa: PLC0415
    from filterd.pipeline.cache import build_answer  # noqa: PLC0415
    from filterd.pipeline.pipeline import build_pipeline  # noqa: PLC0415
    from filterd.pipeline.policy import CountedBlock, Policy, Rewrite  # noqa: PLC0415
    from filterd.pipeline.rewrite import question_for  # noqa: PLC0415
    from filterd.pipeline.tally import Counters  # noqa: PLC0415
    from filterd.profiles.profileset import ProfileSet  # noqa: PLC0415
    from filterd.wire.answer import inspect_response  # noqa: PLC0415
    from filterd.wire.query import parse_query, validate  # noqa: PLC0415

    ds = runs.dataset()
    wires = _queries(ds.sizes[1_000_000].hit_path, queries)
    sources = [bytes(map(int, SOURCES[i % len(SOURCES)].split("."))) for i in range(len(wires))]
    state = runs.RESULTS / "work" / "profiles-opcodes"
    configs = [parse_config(config_text(sc, 1, 9, 2, state)) for sc in SCENARIOS[1:]]
    matcher, listed = open_matcher(compile_lists(configs[0]).index_path)
    loop = asyncio.new_event_loop()
    plain = Policy(matcher, listed, configs[0].blocking, 1232, {})
    pipeline = build_pipeline(configs[0], plain, loop, Counters())
    now = time.monotonic()
    out = []
    for scenario, config in zip(SCENARIOS[1:], configs, strict=True):
        policy = Policy(matcher, listed, config.blocking, 1232, {}, ProfileSet(config))
        for wire, source in zip(wires, sources, strict=True):  # every answer cached first
            query = parse_query(wire)
            assert query is not None
            validate(query)
            view = policy.group_of(source, query, now).view
            block, _ = view.memoised(query.key) or view.decide(query.key, query.name_end - 12)
            asked = question_for(query, block) if isinstance(block, Rewrite) else query
            if isinstance(block, CountedBlock) or asked is None:
                continue
            if pipeline.cache.get(asked.key, now) is None:
                message = _answer_for(asked)
                ident = int.from_bytes(message[:2], "big")
                info = inspect_response(message, asked.key[:-1], ident)
                answer, _ = build_answer(message, info, asked, config.cache, 1232, now)
                pipeline.cache.put(asked.key, answer)
        pipeline.swap_policy(policy)
        clock = Clock(now)
        opcodes(pipeline, wires, sources, clock)  # a first pass: memos as a running worker's
        out.append((scenario.name, opcodes(pipeline, wires, sources, clock)))
    loop.close()
    return out


def markdown(outcomes: list[Outcome]) -> str:
    """One row per run, then each scenario's median; ``qps / CPU`` is qps per
    second of the server's CPU time, the figure to compare when other load
    shares the server's core."""
    lines = [
        "| scenario | names | check-config s | daemon compile s | RSS MiB | PSS MiB | qps "
        "| server CPU | qps / CPU | core busy / steal | NXDOMAIN | lost | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.scenario} | {o.names:,} | {o.check_s:.1f} | {o.compile_s:.1f} | "
            f"{o.rss_mib:.0f} | {o.pss_mib:.0f} | {o.qps:,.0f} | {o.server_cpu:.2f} | "
            f"{o.qps / max(o.server_cpu, 1e-9):,.0f} | {o.core_busy:.2f} / {o.core_steal:.2f} | "
            f"{o.nxdomain_share:.1%} | {o.lost} | {o.load_before} / {o.load_after} |"
        )
    lines += ["", "| scenario | median qps | median qps / CPU | vs 1m+categories (qps / CPU) |",
              "|---|---|---|---|"]  # fmt: skip
    medians = {}
    for scenario in SCENARIOS:
        mine = [o for o in outcomes if o.scenario == scenario.name]
        if mine:
            medians[scenario.name] = (
                statistics.median(o.qps for o in mine),
                statistics.median(o.qps / max(o.server_cpu, 1e-9) for o in mine),
            )
    base = medians.get("1m+categories", (0.0, 0.0))[1]
    for name, (qps, per_cpu) in medians.items():
        ratio = f"{per_cpu / base:.3f}" if base else "-"
        lines.append(f"| {name} | {qps:,.0f} | {per_cpu:,.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load each")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each scenario, interleaved")
    parser.add_argument(
        "--opcodes", type=int, metavar="N", help="count bytecodes per query over N queries instead"
    )
    args = parser.parse_args()
    if args.opcodes:
        print("| scenario | Python bytecodes per query |\n|---|---|")
        for name, count in count_opcodes(args.opcodes):
            print(f"| {name} | {count:.1f} |")
        return
    if not CATEGORIES.is_dir():
        print(f"bench: SKIPPED: {CATEGORIES} absent")
        return
    stamp = runs.timestamp()
    work = runs.RESULTS / "work" / f"profiles-{stamp}"
    ds = runs.dataset()
    nsd_proc = Nsd(work=work, zone=ds.zone_path, cpu=LOAD_CPU)
    upstream = nsd_proc.start()
    outcomes = []
    try:
        for round_number in range(args.rounds):
            for scenario in SCENARIOS:
                print(f"round {round_number + 1}: {scenario.name} ...", flush=True)
                slug = re.sub(r"[^a-z0-9]+", "-", scenario.name)
                outcome = run_scenario(
                    scenario, args.duration, nsd_proc.port, work / f"{round_number}-{slug}"
                )
                print(json.dumps(asdict(outcome)), flush=True)
                outcomes.append(outcome)
    finally:
        upstream.stop()
    table = markdown(outcomes)
    print(table)
    (runs.RESULTS / f"profiles-{stamp}.md").write_text(table + "\n")
    (runs.RESULTS / f"profiles-{stamp}.json").write_text(
        json.dumps([asdict(o) for o in outcomes], indent=2)
    )


if __name__ == "__main__":
    main()
