"""The cameras benchmark's soak arithmetic (PSS growth per hour), without Ray."""

from __future__ import annotations

import pytest

from benchmarks.cameras import pss_growth


def sample(t: float, total: float, gcs: float) -> tuple[float, dict[str, float]]:
    return t, {"pss_mib_total": total, "pss_mib_gcs_server": gcs, "rss_mib_naive_sum": 9999.0}


def test_growth_is_fitted_after_the_settling_time_only() -> None:
    # Warm-up: +500 MiB in the first 10 minutes (buffers filling), then the total grows 36 MiB an hour
    # (0.01 MiB/s) and the GCS is flat with +-1 MiB of noise.
    samples = [sample(t, 1000 + t, 80.0) for t in (0, 150, 300, 450)]
    samples += [sample(600 + 30 * i, 1500 + 0.3 * i, 80 + (1 if i % 2 else -1)) for i in range(21)]
    growth = pss_growth(samples, settle_s=600)
    assert (growth["fit_from_s"], growth["fit_to_s"], growth["samples"]) == (600, 1200, 21)
    total, gcs = growth["by_role"]["total"], growth["by_role"]["gcs_server"]
    assert total["mib_per_hour"] == pytest.approx(36.0, abs=0.1)
    assert total["start_mib"] == pytest.approx(1500.0, abs=0.1)
    assert total["pct_per_hour"] == pytest.approx(2.4, abs=0.01)
    assert abs(gcs["mib_per_hour"]) < 6 and "rss_mib_naive_sum" not in growth["by_role"]


def test_a_role_missing_from_a_sample_is_left_out_and_too_few_samples_refused() -> None:
    samples = [sample(t, 1000.0, 80.0) for t in (0, 30, 60)]
    del samples[1][1]["pss_mib_gcs_server"]  # a process that was not there at that sample
    assert set(pss_growth(samples, settle_s=0)["by_role"]) == {"total"}
    with pytest.raises(ValueError, match="at least 3"):
        pss_growth(samples, settle_s=30)
