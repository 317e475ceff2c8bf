"""genrt.sdk.vqgan"""
