"""facesfm.data"""
