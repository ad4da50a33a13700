"""Pseudo-labelling rounds: predict the unlabelled soundscapes with the previous round (and a teacher), power-scale
and filter the probabilities, train the next round on real + pseudo data; ``rounds.csv`` per folder.

Imports every earlier stage (data, models, teacher, training, inference) and the base.
"""
