"""The numbers the report and `make check` judge by: Welch's t-test across seeds, and the drift
of our metrics from the lecture's."""

import json
import math
import subprocess

import pytest
import yaml
from click.testing import CliRunner
from scipy.special import stdtr

from actgrad.report.tables import span, welch_p, welch_verdict
from pipeline.tools import check_lecture


def welch_by_hand(before, after):
    """Welch's t for mean(after) - mean(before), and its Welch-Satterthwaite degrees of freedom."""

    def mean(xs):
        return sum(xs) / len(xs)

    def var_of_mean(xs):  # the sample variance over n
        m = mean(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)

    va, vb = var_of_mean(after), var_of_mean(before)
    t = (mean(after) - mean(before)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(after) - 1) + vb**2 / (len(before) - 1))
    return t, df


CASES = [
    ([2.0, 2.1, 2.2], [1.9, 2.0, 2.05, 2.1]),  # lower: a small p
    ([1.0, 1.2, 1.1, 1.3, 1.0], [1.25, 1.3, 1.2, 1.4, 1.35]),  # higher: a p near 1
    ([5.0, 5.0001], [4.0, 6.0, 5.0, 7.0, 3.0, 5.5]),  # very unequal variances
]


@pytest.mark.parametrize("before, after", CASES)
def test_welch_p_is_the_t_distributions_cdf_at_welchs_t(before, after):
    t, df = welch_by_hand(before, after)
    assert welch_p(before, after) == pytest.approx(stdtr(df, t), rel=1e-9)
    assert welch_p(before, after) + welch_p(after, before) == pytest.approx(1.0, rel=1e-9)


def test_welch_p_needs_two_seeds_on_each_side():
    assert math.isnan(welch_p([2.0], [1.0, 1.1]))
    assert math.isnan(welch_p([2.0, 2.1], [1.0]))


def test_welch_verdict_says_lower_higher_or_no_difference_from_the_two_sided_p():
    before, after = [2.0, 2.1, 2.2], [1.0, 1.1, 1.2]
    assert welch_verdict(before, after) == ("lower", welch_p(before, after, "two-sided"))
    assert welch_verdict(after, before)[0] == "higher"
    assert welch_verdict(before, [2.05, 2.15, 2.1])[0] == "no difference"
    word, p = welch_verdict([2.0], after)  # one seed: no test
    assert word == "no difference" and math.isnan(p)


def test_span_prints_a_range_or_the_one_value_both_ends_print_as():
    assert span([2.1, 2.25, 2.2], ".2f") == "2.10 to 2.25"
    assert span([185.0, 185.2], ".0f") == "185"
    assert span([], ".2f") == ""


# --- make check -------------------------------------------------------------------------------

EXPECTED = {
    "kaiming": {"train_loss": {"value": 2.0, "tol": 0.5}, "val_loss": {"value": 2.25, "tol": 0.25}},
    "baseline": {"val_loss": {"value": 9.0, "tol": None}},  # shown, not checked
}


def run_check(tmp_path, metrics):
    """`python -m pipeline.tools.check_lecture` on a metrics folder holding `metrics` ({row:
    dict, or None
    for a missing file})."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    for row, values in metrics.items():
        if values is not None:
            (folder / f"{row}.json").write_text(json.dumps(values))
    (tmp_path / "expected.yaml").write_text(yaml.safe_dump(EXPECTED))
    args = ["--metrics", str(folder), "--expected", str(tmp_path / "expected.yaml")]
    return CliRunner().invoke(check_lecture.main, args)


def test_check_passes_values_within_their_tolerance_and_skips_unchecked_ones(tmp_path):
    # 2.5 and 2.0 are each exactly one tolerance away, and exactly representable
    result = run_check(
        tmp_path, {"kaiming": {"train_loss": 2.5, "val_loss": 2.0}, "baseline": None}
    )
    assert result.exit_code == 0, result.output
    assert "all 2 checks within tolerance" in result.stdout


def test_check_fails_naming_each_value_that_drifted(tmp_path):
    result = run_check(tmp_path, {"kaiming": {"train_loss": 2.5, "val_loss": 2.5001}})
    assert result.exit_code == 1
    assert result.stderr.strip() == "drift in 1 of 2 checks: kaiming.val_loss"
    assert "DRIFT" in result.stdout


def test_check_counts_a_missing_metrics_file_as_drift(tmp_path):
    result = run_check(tmp_path, {"kaiming": None})
    assert result.exit_code == 1
    assert result.stderr.strip() == "drift in 2 of 2 checks: kaiming.train_loss, kaiming.val_loss"


def test_the_committed_study_holds_the_lectures_numbers():
    """make check on the project's own expected.yaml and metrics/ (CI runs it after a rerun)."""
    from conftest import ROOT

    args = ["--metrics", str(ROOT / "metrics"), "--expected", str(ROOT / "expected.yaml")]
    result = CliRunner().invoke(check_lecture.main, args)
    assert result.exit_code == 0, result.output
    assert "checks within tolerance" in result.stdout


def markdown_tables(text):
    """Every markdown table of `text`, each as its list of lines."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_the_readmes_results_are_the_reports_tables():
    """The committed report's: a rerun on another CPU rewrites reports/comparison.md within
    tolerance.yaml (make check-outputs checks that), not the README."""
    from conftest import ROOT

    committed = ["git", "show", "HEAD:reports/comparison.md"]
    report = subprocess.run(committed, cwd=ROOT, capture_output=True, text=True, check=True)
    readme = markdown_tables((ROOT / "README.md").read_text())
    report = markdown_tables(report.stdout)
    assert len(readme) == 2 and readme == report[:2]
