"""Judging tunes and models: the headline checks of one tune, musical statistics, form
and novelty against real tunes, `musicgen evaluate`, the validity sample taken while training and
the report page.
"""
