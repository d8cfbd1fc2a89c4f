"""lmbook.checks: the report and comparison helpers behind every exercise checker."""

import numpy as np

from lmbook.checks import CheckReport, compare_arrays, run_cases


def test_compare_arrays_explains_shape_value_and_nan_differences():
    assert compare_arrays([1.0, 2.0], [1.0, 2.0]) == (True, "")
    ok, why = compare_arrays([1.0], [1.0, 2.0])
    assert not ok and "shape" in why
    ok, why = compare_arrays([1.0, 5.0], [1.0, 2.0])
    assert not ok and "index (1,)" in why and "got 5" in why
    ok, why = compare_arrays([np.nan], [1.0])
    assert not ok and "nan" in why


def test_run_cases_reports_pass_fail_and_exceptions(capsys):
    def reference(x):
        return np.exp(x) / np.exp(x).sum()

    good = run_cases("softmax", reference, reference, {"small": (np.arange(3.0),)})
    assert good.passed and "all checks passed" in capsys.readouterr().out

    def broken(x):
        raise ZeroDivisionError("oops")

    bad = run_cases("softmax", broken, reference, {"small": (np.arange(3.0),)}, verbose=False)
    assert not bad.passed and "ZeroDivisionError" in str(bad)
    assert not CheckReport("empty").passed  # nothing checked is not a pass
