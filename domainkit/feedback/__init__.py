"""Learning from use: the conversation log (``log``), the reviewers' verdicts kept in
``validation.yaml`` (``review``) and the review desk both the CLI and the review page
work with (``desk``). What a build does with the verdicts is ``stages`` (the ``reviews``
stage) and ``eval.calibration``; the HTTP side is ``runtime.feedback_api`` and
``runtime.review_page``."""
