"""genrt.runtime.pipelines"""
