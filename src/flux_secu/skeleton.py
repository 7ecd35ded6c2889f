"""A starting config for N sites of M cameras (``flux-secu config skeleton``): valid as printed, once the
model exists and the environment variables it names are set, with every value an integrator must change
marked as such. Written as text, not dumped from a mapping, so that it keeps its comments."""

from __future__ import annotations

FIXED_HOLIDAYS = ("01-01", "05-01", "05-08", "07-14", "08-15", "11-01", "11-11", "12-25")
"""French public holidays on a fixed date; Easter Monday, Ascension and Whit Monday move each year."""

DAYS = ("mon", "wed", "thu", "fri")
WINTER = ("09:00-12:00", "13:30-17:00")
SUMMER = ("08:30-12:00", "13:30-18:30")


def _hours(indent: str, day_ranges: tuple[str, ...], saturday: str) -> list[str]:
    ranges = ", ".join(f'"{r}"' for r in day_ranges)
    return [f"{indent}{day}: [{ranges}]" for day in DAYS] + [f'{indent}sat: ["{saturday}"]']


def site_id(site: int, width: int) -> str:
    return f"site-{site:0{width}d}"


def password_variable(site: int, width: int) -> str:
    return f"FLUX_CAM_PASSWORD_SITE_{site:0{width}d}"


def skeleton(sites: int, cameras_per_site: int, *, model: str, year: int) -> str:
    """The config text; ``year``: the first of the two years whose fixed holidays are listed."""
    if sites < 1 or cameras_per_site < 1:
        raise ValueError("at least one site of one camera")
    sw, cw = max(2, len(str(sites))), max(2, len(str(cameras_per_site)))
    variables = [password_variable(s, sw) for s in range(1, sites + 1)]
    out = [
        f"# flux-secu: a starting config for {sites} site(s) of {cameras_per_site} camera(s), made by",
        f"# `flux-secu config skeleton --sites {sites} --cameras-per-site {cameras_per_site}`.",
        "# Change every value marked CHANGE (addresses, contacts, hours), then `flux-secu check FILE`.",
        "# Secrets come from the environment, never from this file: export, before check and run,",
        *(f"#   {v}" for v in variables),
        "# (the password of each site's read-only camera account).",
        "# configs/agglomeration.example.yaml shows the rest: zones, masks, speakers of each driver, the",
        "# on-call rota, panic buttons, the Redis store and the API behind a reverse proxy.",
        "timezone: Europe/Paris",
        "var_dir: var",
        "model:",
        f"  path: {model}",
        "store: {kind: sqlite, path: var/flux-secu.db}   # on a cluster: {kind: redis, url: ...}",
        "notifications:",
        "  dry_run: true   # notifications recorded under var_dir; false once the channels are real",
        "sites:",
    ]
    for s in range(1, sites + 1):
        sid = site_id(s, sw)
        out += [f"  - id: {sid}", f"    name: Site {s:0{sw}d}   # CHANGE"]
        if s == 1:  # the others share its calendar (YAML anchors): change it here, or give a site its own
            out += [
                "    opening_hours: &hiver   # CHANGE: winter hours; a day left out is closed all day",
                *_hours("      ", WINTER, "09:00-17:00"),
                "    seasonal_hours: &ete   # summer hours, every year from 1 April to 31 October",
                "      - name: été",
                '        from: "04-01"',
                '        until: "10-31"',
                "        opening_hours:",
                *_hours("          ", SUMMER, "08:30-18:30"),
                "    holidays: &feries   # CHANGE: add Easter Monday, Ascension and Whit Monday",
                f"      [{', '.join(f'{year}-{d}' for d in FIXED_HOLIDAYS)},",
                f"       {', '.join(f'{year + 1}-{d}' for d in FIXED_HOLIDAYS)}]",
            ]
        else:
            out += ["    opening_hours: *hiver", "    seasonal_hours: *ete", "    holidays: *feries"]
        out += ["    cameras:   # CHANGE: each camera's substream"]
        out += [
            f"      - {{id: {sid}-cam-{c:0{cw}d}, source: \"rtsp://cam-{c:0{cw}d}.{sid}.lan:554/stream2\", "
            f"username: viewer, password: \"${{{password_variable(s, sw)}}}\"}}"
            for c in range(1, cameras_per_site + 1)
        ]
        out += [
            f"    speakers: [{{id: {sid}-hp, driver: file}}]   # CHANGE: driver axis, sip or command",
            "    escalation:",
            "      contacts:   # CHANGE: who is called, in order",
            "        - {name: Astreinte, channels: "
            "[\"mailto://localhost:25?from=flux-secu@example.org&to=astreinte@example.org\"]}",
        ]
    return "\n".join(out) + "\n"
