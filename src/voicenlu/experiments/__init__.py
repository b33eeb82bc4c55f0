"""Experiments that measure the product: out-of-scope rejection (``oos``), the learning curve
(``learning_curve``), the deployment bench (``bench``), slot value coverage (``values``) and
the noise mixer of the speech benchmark (``noise``).

They live apart so that what a user installs to train and serve stays what it is: nothing in
the runtime, the training pipeline or the server imports them; only the CLI commands that run
them (``evaluate --oos``, ``evaluate --learning-curve``, ``bench``) and the benchmark scripts do.
"""
