"""The shapes world: a small world of coloured shapes, models trained on it in the product's own
classes, its detector and its benchmark (docs/shapes.md)."""
