"""genrt.runtime.schedulers"""
