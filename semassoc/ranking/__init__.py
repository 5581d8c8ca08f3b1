"""Ranking: fusion of text and behaviour signals, the query engine, batch jobs."""
