"""A small space over the default trainer: fast children, still every kind of decision."""

from mnms_env import Decision, SearchSpace

SMALL = SearchSpace(
    (
        Decision("representation", ("char-hash", "embedding-bag", "raw")),
        Decision("hidden_layers", (0, 1)),
        Decision("width", (16, 32)),
        Decision("learning_rate", (0.003, 0.03)),
        Decision("batch_size", (128, 256)),
    )
)
