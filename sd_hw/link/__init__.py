"""The host link of a board: a UART and the framed protocol that drives an SDCore's host bus."""
