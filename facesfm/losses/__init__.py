"""facesfm.losses"""
