"""Learning pieces shared by the stages: the Keras model builders, the dumb baselines, and the metrics (scores with intervals)."""
