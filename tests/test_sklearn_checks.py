"""DBSCAN and FINCH against scikit-learn's estimator checks (scikit-learn stays optional)."""

import inspect
import warnings

import pytest

pytest.importorskip("sklearn", minversion="1.6", reason="the checks need scikit-learn >= 1.6")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import aas_core as aas  # noqa: E402

# aas_core refuses integer and object arrays on purpose (a silent cast of ids or counts into
# distances or embeddings is almost always a mistake); scikit-learn casts them.
_REFUSED_DTYPES = {
    "check_estimators_dtypes": "integer input is refused on purpose (TypeError), not cast",
    "check_dtype_object": "object arrays are refused on purpose (TypeError), not cast",
}

# xfail_strict (scikit-learn >= 1.8): a refused check that starts passing is noticed
_STRICT = (
    {"xfail_strict": True}
    if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters
    else {}
)

with warnings.catch_warnings():
    # collecting warns that the estimators do not inherit from sklearn's BaseEstimator, which
    # is deliberate (no import of scikit-learn at run time)
    warnings.filterwarnings("ignore", "Estimator .* does not inherit", UserWarning)
    _checks = parametrize_with_checks(
        [aas.DBSCAN(n_threads=1), aas.FINCH(n_threads=1)],
        expected_failed_checks=lambda est: _REFUSED_DTYPES,
        **_STRICT,
    )


@_checks
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
