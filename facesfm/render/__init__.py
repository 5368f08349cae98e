"""facesfm.render"""
