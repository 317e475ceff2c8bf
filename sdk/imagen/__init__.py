"""genrt.sdk.imagen"""
