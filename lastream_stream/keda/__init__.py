"""KEDA's external scaler, served from LaStream's recommendations (``service.py``)."""
