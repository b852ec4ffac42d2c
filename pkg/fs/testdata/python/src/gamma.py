import _speedups
X = 1
