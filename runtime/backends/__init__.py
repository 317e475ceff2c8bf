"""genrt.runtime.backends"""
