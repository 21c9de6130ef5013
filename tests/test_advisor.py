"""The SSAL advisor (``ssal_keras.grouping.advisor``): a case where it must advise SSAL and
one where it must not (BUILD_NOTES.md, "SSAL advisor (issue 22)")."""

import numpy as np
import pytest

from ssal_keras.grouping import advisor


def _pairs_confused(examples=2000, seed=0):
    """Four classes; the base confuses 0 with 1 and 2 with 3 on a fifth of the images, by a
    small margin, and is sure where it is right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=examples)
    partner = labels ^ 1
    wrong = rng.random(examples) < 0.2
    probabilities = np.full((examples, 4), 0.1 / 3)
    rows = np.arange(examples)
    probabilities[rows, labels] = np.where(wrong, 0.40, 0.9)
    probabilities[rows, partner] = np.where(wrong, 0.45, 0.1 / 3)
    probabilities[wrong] = probabilities[wrong] / probabilities[wrong].sum(-1, keepdims=True)
    return probabilities, labels


def test_it_advises_ssal_when_the_errors_cross_the_groups():
    # split_similar puts the confused pairs in different groups: a group head can fix them.
    probabilities, labels = _pairs_confused()
    report = advisor.advise(probabilities, labels, [2], alpha=0.3, criterion="split_similar")
    (row,) = report["rows"]
    assert row["grouping"][0] != row["grouping"][1] and row["grouping"][2] != row["grouping"][3]
    assert row["within_group_share"] == 0.0
    assert row["implied_group_accuracy"] == pytest.approx(0.8, abs=0.03)
    assert row["simulated_gain"] > 0.1
    assert report["best"] == 2 and report["verdict"].startswith("use K=2: ")


def test_it_advises_against_ssal_when_the_errors_stay_inside_the_groups():
    # join_similar groups the confused pairs: no head can separate them.
    probabilities, labels = _pairs_confused()
    report = advisor.advise(probabilities, labels, [2], alpha=0.3, criterion="join_similar")
    (row,) = report["rows"]
    assert row["within_group_share"] == 1.0 and row["implied_group_accuracy"] == 1.0
    assert abs(row["simulated_gain"]) < 0.01
    assert report["best"] is None
    assert report["verdict"].startswith("SSAL is unlikely to help here: ")
    assert "0% of the base's errors cross groups" in report["verdict"]


def test_simulated_head_is_right_as_often_as_stated():
    probabilities, labels = _pairs_confused()
    grouping = np.array([0, 1, 0, 1])
    # alpha 0: the head changes nothing, whatever it says.
    assert advisor.simulate_gain(probabilities, labels, grouping, 0.9, 0.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match=r"head_accuracy must be in \(1/2, 1\)"):
        advisor.simulate_gain(probabilities, labels, grouping, 1.0, 0.3)


@pytest.mark.parametrize("probabilities, labels, num_groups, message", [
    (np.ones((3, 4)) / 4, np.array([0, 1]), [2], "one class id per example"),
    (np.ones((3, 4)) / 4, np.array([0, 1, 4]), [2], "one class id per example"),
    (np.ones((3, 4)) / 4, np.array([0, 1, 2]), [4], "num_groups must be an int between 2 and 3"),
])
def test_bad_input_is_one_line(probabilities, labels, num_groups, message):
    with pytest.raises(ValueError, match=message) as error:
        advisor.advise(probabilities, labels, num_groups, alpha=0.3)
    assert "\n" not in str(error.value)
