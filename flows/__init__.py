"""Prefect flows: thin compositions of ``tl_med`` stages. Only this package imports Prefect."""
