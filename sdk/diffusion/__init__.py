"""genrt.sdk.diffusion"""
