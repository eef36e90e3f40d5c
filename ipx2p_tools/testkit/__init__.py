"""Test support, kept out of the product package: random-weight checkpoints of the true layouts
(sd15_layout, layouts, synthetic) and the API-format graph builder (graph)."""
