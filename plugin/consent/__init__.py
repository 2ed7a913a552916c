"""The consent gate and the consent strings it reads (TCF v2, GPP, US Privacy): the most
restrictive signal wins."""
