s-
