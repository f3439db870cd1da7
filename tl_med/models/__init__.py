"""Networks: the factory and pretrained-weight loading."""
