"""Scoring shared by evaluation, SFT-data selection and DPO pairs: maths answers (math-verify),
multiple-choice letters, and sandboxed execution of model-written code."""
