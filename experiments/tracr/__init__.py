"""Tracr-compiled programs as ground truth: methods scored against known circuits."""
