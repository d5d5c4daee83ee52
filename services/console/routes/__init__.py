"""One router per screen of issue 13."""
