"""Every layer of a model, at any depth: nested models, wrappers and custom blocks."""


def all_layers(model):
    """`model` and every layer inside it, each once, parents before children.

    Keras tracks the sublayers a custom layer keeps as attributes (KerasHub's
    encoder blocks, a pruning wrapper's `layer`) as well as a functional
    model's `layers`; both are walked.
    """
    try:
        return list(model._flatten_layers(include_self=True, recursive=True))
    except (AttributeError, TypeError):
        found, stack, seen = [], [model], set()
        while stack:
            layer = stack.pop()
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            found.append(layer)
            stack.extend(getattr(layer, "layers", None) or [])
            inner = getattr(layer, "layer", None)
            if inner is not None:
                stack.append(inner)
        return found
