"""test support"""
