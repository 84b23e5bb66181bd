"""Wire contracts: the bytes and headers other processes (and our own next stage) read.

* ``deadletter``  the one dead-letter record format, for both dead-letter topics.
"""
