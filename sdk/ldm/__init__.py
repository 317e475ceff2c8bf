"""genrt.sdk.ldm"""
