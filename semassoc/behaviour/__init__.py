"""Behaviour: events, pair statistics and weightings, association rules, user histories."""
